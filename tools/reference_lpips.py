"""Development check: our metrics.LPIPS against the lpips package (0.1.4), same random AlexNet and the
package's own v0.1 calibration layers; relative difference of per-pair distances."""
import os, sys, torch, lpips
sys.path.insert(0, "/work/main")
import metrics
torch.manual_seed(0)
ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
ours = metrics.LPIPS(backbone=None, linear=os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"))
# copy the package's random AlexNet into ours: its slices hold torchvision's features layers in order
state = {}
for name, p in ref.net.named_parameters():  # slice1.0.weight -> features.0.weight (the slices keep torchvision's indices)
    state["features." + name.split(".", 1)[1]] = p.detach()
missing, unexpected = ours.load_state_dict({**ours.state_dict(), **state}, strict=True), None
for size in (32, 64):
    a, b = torch.rand(64, 3, size, size), torch.rand(64, 3, size, size)
    with torch.no_grad():
        d_ref = ref(a, b, normalize=True).flatten().double()
        d_ours = ours(a, b).double()
    rel = ((d_ours - d_ref).abs() / d_ref.abs()).max().item()
    print(f"{size}x{size}: 64 pairs, mean LPIPS {d_ref.mean():.6f} (lpips) vs {d_ours.mean():.6f} (ours), max relative difference {rel:.2e}")
    assert rel <= 1e-4
