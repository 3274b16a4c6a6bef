""" samix-timm: SAMix (Scenario-Agnostic Mixup, arXiv 2111.15454) as a timm component. """
from .factory import create_mixup, mixing_active
from .features import FeatureTap, FeatureTapError
from .mixer import AutoMixer, Mixer, MixerNumericsError, create_mixer
from .momentum import BetaSchedule, MomentumEncoder, MomentumSchedule
from .samix import SAMix, create_samix
from .task import SAMixTask, create_task
from .settings import MixerSettings, MixSettings, StepPreset
from .defaults import samix_defaults
from .pretrained import SAMixPretrained, export_mixer, load_artifact
from .hub import create_pretrained_mixer, list_pretrained
from .version import __version__
from . import losses
