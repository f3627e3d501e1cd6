"""Hosts on one machine (network namespaces on a private bridge) with shaped links, for multi-host
runs and drills without a cluster."""
