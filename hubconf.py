""" torch.hub entrypoints: pre-trained SAMix Mixers (SAMix^P) as timm-Mixup-shaped augmentations.

    data_config = timm.data.resolve_data_config(model=model)  # the normalisation your loader uses
    mixer = torch.hub.load('<repo or dir>', 'samix_r18_cluttered_mnist', source='local', num_classes=10,
                           data_config=data_config)
    x_mixed, soft_target = mixer(x, y)  # x normalised with data_config

A Mixer you exported yourself (`python -m samix_timm.export`) loads the same way:
    mixer = torch.hub.load('<repo or dir>', 'pretrained_mixer', 'mixers/mine-1a2b3c4d.pth', source='local', ...)
"""
from samix_timm.hub import create_pretrained_mixer as pretrained_mixer, hub_entrypoint

dependencies = ['torch', 'timm']

samix_r18_cluttered_mnist = hub_entrypoint('samix_r18_cluttered_mnist')
samix_r18_cluttered_mnist_lam = hub_entrypoint('samix_r18_cluttered_mnist_lam')
samix_test_resnet_photo_objects = hub_entrypoint('samix_test_resnet_photo_objects')
samix_r18_in1k = hub_entrypoint('samix_r18_in1k')
samix_r50_in1k_ssl = hub_entrypoint('samix_r50_in1k_ssl')
