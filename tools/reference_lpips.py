"""Developer check: metrics.LPIPS against the lpips package (0.1.4), with the same random AlexNet and the
package's own v0.1 calibration layers; prints the relative difference of the per-pair distances.

Needs `pip install lpips` (a development check, not a dependency; lpips builds its AlexNet without
downloading anything when pnet_rand=True):

    python tools/reference_lpips.py
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import metrics  # noqa: E402

TOLERANCE = 1e-4  # largest relative difference of a per-pair distance that passes


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    try:
        import lpips
    except ImportError:
        sys.exit("reference_lpips.py: error: needs the lpips package: pip install lpips==0.1.4")
    torch.manual_seed(0)
    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    ours = metrics.LPIPS(backbone=None, linear=os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"))
    # lpips keeps torchvision's AlexNet `features` in slices that keep its indices: slice2.3.weight is features.3.weight
    backbone = {"features." + name.split(".", 1)[1]: p.detach() for name, p in reference.net.named_parameters()}
    ours.load_state_dict({**ours.state_dict(), **backbone}, strict=True)
    worst = 0.0
    for size in (32, 64):
        a, b = torch.rand(64, 3, size, size), torch.rand(64, 3, size, size)
        with torch.no_grad():
            theirs, mine = reference(a, b, normalize=True).flatten().double(), ours(a, b).double()
        relative = ((mine - theirs).abs() / theirs.abs()).max().item()
        worst = max(worst, relative)
        print(f"{size}x{size}, 64 pairs: mean LPIPS {theirs.mean():.6f} (lpips) vs {mine.mean():.6f} (ours), "
              f"largest relative difference {relative:.2e}")
    print("agree" if worst <= TOLERANCE else f"DISAGREE: {worst:.2e} > {TOLERANCE}")


if __name__ == "__main__":
    main()
