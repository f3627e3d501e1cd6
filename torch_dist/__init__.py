"""PyTorch trainer: DistributedDataParallel over gloo (CPU) or nccl (GPU). Entry: python -m torch_dist.train"""
