""" Run under torchrun by the tests: train briefly, then write this rank's weights (and SAMix state). """
import sys
from pathlib import Path

import torch

from samix_timm.engine import parse_train_args, train

if __name__ == '__main__':
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    args, text = parse_train_args(argv)
    result = train(args, text)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    samix = result.mixup_fn.get_state() if hasattr(result.mixup_fn, 'get_state') else None
    torch.save(dict(state=state, samix=samix, metrics=result.eval_metrics), out / f'rank{args.rank}.pt')
