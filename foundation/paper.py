"""The paper's reported numbers, in one table (docs/paper-notes.md sec. 2.5, 3.2, 4).

Ilyas et al. 2019, CIFAR-10 unless named otherwise. Figure 2(b) is read off the figure (+-0.3);
Table 1 and Figure 3 are as printed. The experiments copy the relevant entry into every record
(``"paper"``), the reports print it beside the measured value, and ``paper_figures`` overlays it
on the figures; nothing else writes these numbers down.
"""

from __future__ import annotations

from typing import Any

PAPER_NUMBERS: dict[str, Any] = {
    "source": "Ilyas et al. 2019, CIFAR-10; Fig. 2(b) values read off the figure (+-0.3), Table 1 and "
              "Fig. 3 as in docs/paper-notes.md sec. 2.5, 3.2, 4",
    "fig2": {   # percent: clean accuracy, l2 eps=0.25 PGD-7 robust accuracy
        "std_D": {"clean": 95.2, "robust": 4.6},
        "adv_D": {"clean": 90.8, "robust": 82.5},
        "std_DR": {"clean": 84.2, "robust": 48.3},
        "std_DNR": {"clean": 87.7, "robust": 0.8},
    },
    "table1": {"D": 95.3, "D_rand": 63.3, "D_det": 43.7, "chance": 10.0},
    "table1_restricted_imagenet": {"D": 96.6, "D_rand": 87.9, "D_det": 64.4, "chance": 100 / 9},
    "fig3": {   # architecture: (test accuracy trained on D_det, transfer success rate), percent
        "VGG-16": (27.9, 65.7),
        "Inception-v3": (39.4, 82.7),
        "ResNet-18": (40.8, 92.1),
        "DenseNet": (41.7, 92.8),
        "ResNet-50": (44.7, 98.8),
    },
}


__all__ = ["PAPER_NUMBERS"]
