from .args import ConfigError, create_train_parser, load_yaml_config, mixup_arg, parse_train_args
from .loop import StepContext, evaluate, train_one_epoch
from .train import TrainResult, train
