"""Atlas: draws what an image classifier has learned with deep generator networks.

The method is Despraz et al., "Towards a Better Understanding of Deep Neural Networks
Representations using Deep Generative Networks" (IJCCI 2017).
"""

from __future__ import annotations

__version__ = "0.1.0"
