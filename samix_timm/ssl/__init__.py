""" Self-supervised SAMix: MoCo v2 with cross-view Mixup/CutMix, SAMix-I and SAMix-C, and probes (spec §6). """
from .cluster import kmeans_labels, require_faiss
from .encoder import SSLEncoder, create_ssl_encoder, export_backbone
from .losses import eta_instance_loss, info_nce, lam_info_nce, two_way_loss
from .mixing import derangement, get_ssl_mode, list_ssl_modes
from .moco import MoCoOnline, MoCoSAMix
from .queue import KeyQueue
