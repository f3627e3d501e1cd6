"""`mnist-dist doctor`: its parts under any launcher, the all-reduce sweep they measure, and the
findings it reports."""
