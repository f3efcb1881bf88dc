"""Fit the window the ``sface`` surrogate cuts out of the masker's 160x160 crop (``sface.WINDOW``).

Usage: ``.venv/bin/python tools/fit_sface_window.py [--photos ../shared/data/faceoff-celebs/photos]
[--aligned ../shared/data/faceoff-celebs/aligned160]``

For every photo, the largest face is found twice, as the two pipelines do:

- the masker's way: MTCNN (:class:`faceoff.detector.detection.FaceDetector`), the box plus 10%
  margin (:func:`faceoff.common.crops.crop_region`), resized to 160x160;
- the evaluator's way (:class:`faceoff.faces.recognizers.sface.SFaceRecognizer`): YuNet
  landmarks, then ``FaceRecognizerSF.alignCrop``, a similarity warp onto OpenCV's 5-point
  112x112 template. The warp is recomputed here (Umeyama, as OpenCV does) and checked against
  ``alignCrop``'s output pixel for pixel.

The aligned square's centre and side are mapped into the 160 crop's pixel coordinates (edges,
not centres; rotation ignored) and averaged over the photos. With the fitted window, the script
prints how well the surrogate agrees with the real pipeline: cosine similarity between the
surrogate's embedding of the 160 crop and OpenCV's SFace feature of the aligned crop, the
surrogate's own check on the real aligned crops, and leave-one-out nearest-centroid top-1 on the
photos and on the aligned160 crops. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: OpenCV's SFace template (face_recognize.cpp): eyes, nose tip, mouth corners in the 112 crop.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def loo_top1(emb: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out nearest-centroid top-1 with unit-length centroids (cosine)."""
    labels_arr = np.asarray(labels)
    hits = 0
    for i in range(len(emb)):
        keep = np.arange(len(emb)) != i
        names = sorted(set(labels_arr[keep]))
        cents = []
        for n in names:
            c = emb[keep & (labels_arr == n)].mean(0)
            cents.append(c / np.linalg.norm(c))
        hits += names[int(np.argmax(np.asarray(cents) @ emb[i]))] == labels[i]
    return hits / len(emb)


def main() -> int:
    data = ROOT.parent / "shared/data/faceoff-celebs"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=data / "photos")
    parser.add_argument("--aligned", type=Path, default=data / "aligned160")
    args = parser.parse_args()

    import cv2
    from PIL import Image

    from faceoff.common.crops import crop_region, extract_crop
    from faceoff.common.imaging import decode
    from faceoff.detector.detection import FaceDetector
    from faceoff.faces.alignment import similarity_transform
    from faceoff.faces.models.sface import SFaceModel, Window
    from faceoff.faces.recognizers.sface import SFaceRecognizer

    detector = FaceDetector()
    real = SFaceRecognizer()
    real._load()

    rows = []  # (label, 160 crop, real aligned 112 crop BGR, real feature, cx, cy, side)
    for file in sorted(args.photos.glob("*/*.jpg")):
        photo = decode(file.read_bytes())
        faces = detector.detect_photo(photo).faces
        bgr = cv2.cvtColor(photo.pixels, cv2.COLOR_RGB2BGR)
        yunet = real._detect(bgr)
        if not faces or yunet is None:
            print(
                f"{file.name}: skipped (MTCNN faces {len(faces)}, YuNet {'none' if yunet is None else 'one'})"
            )
            continue
        face = max(faces, key=lambda f: f.area)
        h, w = photo.pixels.shape[:2]
        region = crop_region(face.box, w, h)
        crop = extract_crop(photo.pixels, region)
        aligned = real._sface.alignCrop(bgr, yunet.reshape(1, -1))
        m = similarity_transform(yunet[4:14].reshape(5, 2).astype(np.float64), TEMPLATE)
        mine = cv2.warpAffine(bgr, m, (112, 112), flags=cv2.INTER_LINEAR)
        diff = np.abs(mine.astype(int) - aligned.astype(int)).mean()
        if diff > 1.0:
            print(
                f"{file.name}: recomputed warp differs from alignCrop by {diff:.2f} grey levels on average"
            )
        # Centre of the aligned square (index coords 55.5) back into the photo, then into the crop.
        inv = cv2.invertAffineTransform(m)
        centre = inv @ np.array([55.5, 55.5, 1.0]) + 0.5  # pixel-edge coordinates
        side = 112.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
        sx, sy = 160.0 / region.width, 160.0 / region.height
        cx, cy = (centre[0] - region.left) * sx, (centre[1] - region.top) * sy
        feature = np.asarray(real._sface.feature(aligned), np.float64).reshape(-1)
        rows.append((file.parent.name, crop, aligned, feature, cx, cy, side * np.sqrt(sx * sy)))

    geo = np.array([r[4:] for r in rows])
    mean = geo.mean(0)
    print(f"photos used: {len(rows)}")
    print(f"window centre_x: mean {mean[0]:.2f} sd {geo[:, 0].std():.2f}")
    print(f"window centre_y: mean {mean[1]:.2f} sd {geo[:, 1].std():.2f}")
    print(
        f"window side:     mean {mean[2]:.2f} sd {geo[:, 2].std():.2f} (min {geo[:, 2].min():.1f}, max {geo[:, 2].max():.1f})"
    )

    window = Window(round(float(mean[0]), 1), round(float(mean[1]), 1), round(float(mean[2]), 1))
    print(f"fitted: {window}")
    model = SFaceModel(window=window)
    labels = [r[0] for r in rows]
    real_feat = np.array([r[3] for r in rows])
    real_feat /= np.linalg.norm(real_feat, axis=1, keepdims=True)

    tf_aligned = model.features(
        np.stack([r[2][..., ::-1].astype(np.float32) for r in rows])
    ).numpy()
    tf_aligned /= np.linalg.norm(tf_aligned, axis=1, keepdims=True)
    same_input = np.sum(tf_aligned * real_feat, axis=1)
    print(
        f"TF network vs cv2 SFace on the real aligned crops: cosine min {same_input.min():.7f} mean {same_input.mean():.7f}"
    )

    surrogate = model.embed_numpy(np.stack([r[1] for r in rows])).astype(np.float64)
    agree = np.sum(surrogate * real_feat, axis=1)
    print(
        f"surrogate(160 crop) vs real pipeline: cosine mean {agree.mean():.3f} min {agree.min():.3f} median {np.median(agree):.3f}"
    )
    print(f"LOO nearest-centroid top-1, real pipeline on photos: {loo_top1(real_feat, labels):.3f}")
    print(f"LOO nearest-centroid top-1, surrogate on photos:     {loo_top1(surrogate, labels):.3f}")

    crops, crop_labels = [], []
    for file in sorted(args.aligned.glob("*/*.png")):
        with Image.open(file) as img:
            crops.append(np.asarray(img.convert("RGB").resize((160, 160)), np.float32) / 255.0)
        crop_labels.append(file.parent.name)
    emb = model.embed_numpy(np.stack(crops)).astype(np.float64)
    print(
        f"LOO nearest-centroid top-1, surrogate on aligned160 ({len(crops)} crops): {loo_top1(emb, crop_labels):.3f}"
    )

    identity = SFaceModel(window=Window(80.0, 80.0, 160.0))
    plain = identity.embed_numpy(np.stack([r[1] for r in rows])).astype(np.float64)
    plain_agree = np.sum(plain * real_feat, axis=1)
    print(
        f"for comparison, whole 160 crop resized to 112: cosine mean {plain_agree.mean():.3f} min {plain_agree.min():.3f}; "
        f"LOO photos {loo_top1(plain, labels):.3f}, aligned160 {loo_top1(identity.embed_numpy(np.stack(crops)).astype(np.float64), crop_labels):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
