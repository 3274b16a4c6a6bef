""" Run under torchrun by the tests: a short self-supervised run, then this rank's encoder, θ̄ and Mixer. """
import sys
from pathlib import Path

import torch

from samix_timm.ssl.args import parse_ssl_args
from samix_timm.ssl.engine import train_ssl

if __name__ == '__main__':
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    args, text = parse_ssl_args(argv)
    result = train_ssl(args, text)
    moco = result.moco.state_dict()
    state = dict(encoder={k: v.detach().cpu() for k, v in result.encoder.state_dict().items()},
                 moco={k: v for k, v in moco.items() if k != 'pseudo_labels'}, loss=result.train_metrics.get('loss'))
    torch.save(state, out / f'rank{args.rank}.pt')
