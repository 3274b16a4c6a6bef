""" torch.hub entrypoints: pre-trained SAMix Mixers (SAMix^P) as timm-Mixup-shaped augmentations.

    mixer = torch.hub.load('<repo or dir>', 'samix_r18_cluttered_mnist', source='local', num_classes=10)
"""
from samix_timm.hub import hub_entrypoint

dependencies = ['torch', 'timm']

samix_r18_cluttered_mnist = hub_entrypoint('samix_r18_cluttered_mnist')
samix_r18_in1k = hub_entrypoint('samix_r18_in1k')
samix_r50_in1k_ssl = hub_entrypoint('samix_r50_in1k_ssl')
