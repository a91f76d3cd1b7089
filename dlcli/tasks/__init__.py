"""Training loops, one per kind of learning; importing this package registers them all."""

from importlib import import_module

for _name in ("perceptron", "regress", "classify"):
    import_module(f"{__name__}.{_name}")
import_module(f"{__name__}.gan")  # adversarial training
import_module(f"{__name__}.dqn")  # deep Q-learning (reinforcement learning)
import_module(f"{__name__}.neocognitron")  # Fukushima: competitive learning without labels, linear readout
import_module(f"{__name__}.autoencode")  # the lecture's autoencoder; layer-wise pretraining (SdA, DBN)
import_module(f"{__name__}.pretrain")
