"""Model architectures, one per file; importing this package registers them all."""

from importlib import import_module

# Each module registers its builders with ``@register_model``. Listed explicitly so that the set of
# built-in models is visible in one place.
for _name in ("mlp", "lenet", "alexnet", "alexnet_cifar", "resnet", "cifar_resnet"):
    import_module(f"{__name__}.{_name}")
import_module(f"{__name__}.gan")  # generator/discriminator pairs (GAN, DCGAN)
import_module(f"{__name__}.dqn")  # Q-networks (DQN)
import_module(f"{__name__}.autoencoder")  # the lecture's autoencoder
import_module(f"{__name__}.deep_mlp")  # sigmoid stacks for layer-wise pretraining (SdA, DBN)
import_module(f"{__name__}.neocognitron")  # Fukushima: S-layers learned without labels, C-layers
