""" Run under torchrun by the tests: one fp16-scaled Mixer step where only rank 1's gradient overflows. """
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from samix_timm.mixer_trainer import step_mixer_optimizer

if __name__ == '__main__':
    dist.init_process_group('gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same start on both ranks
    mixer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(mixer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cpu', init_scale=2. ** 8)

    def sync_grads():
        for p in mixer.parameters():
            dist.all_reduce(p.grad)
            p.grad.div_(world)

    x = torch.full((2, 4), 1. + rank)
    loss = mixer(x).sum() * (float('inf') if rank == 1 else 1.)  # an overflow on one rank only
    step_mixer_optimizer(loss, optimizer, sync_grads, scaler)
    loss = mixer(x).sum()  # a normal step after it
    step_mixer_optimizer(loss, optimizer, sync_grads, scaler)
    torch.save(dict(state={k: v.clone() for k, v in mixer.state_dict().items()}, scale=scaler.get_scale()),
               Path(sys.argv[1]) / f'rank{rank}.pt')
    dist.destroy_process_group()
