"""The ``facenet512`` recogniser: FaceNet Inception-ResNet-v1 trained on CASIA-WebFace, 512-D.

The pipeline is the ``facenet`` recogniser's (:mod:`faceoff.faces.recognizers.facenet`):
MTCNN finds the largest face, the box plus a 10% margin is cut and resized to 160x160, and the
network (:class:`faceoff.faces.models.facenet512.FaceNet512`, the paper's FLCT model) embeds
it, L2-normalised. It is a different training run on a different data set from the masker's
default surrogate, so its verdict is a black-box one unless the protection used the
``facenet512`` surrogate (the ``high`` profile does; :mod:`faceoff.faces.whitebox`).

It is not in the default set (:data:`~faceoff.faces.recognizers.DEFAULT_LOCAL_RECOGNIZERS`):
an evaluator loads it when ``FACEOFF_LOCAL_RECOGNIZERS`` (``faceoff evaluate --recognizers``,
``Client.local(recognizers=...)``) names it.

Embeddings are compared by Euclidean distance. There is no published threshold for these
weights on these crops, so it was chosen on the shared celebrity set (10 identities, 5 photos
and 9 aligned crops each), as for ``facenet``. Photo against photo, same-person distances have median
0.76 (5th-95th percentile 0.56-1.00, largest 1.20) and different people median 1.30 (5th-95th
percentile 1.11-1.44, smallest 0.95): the two overlap more than for ``facenet``, with an equal
error of about 2% at 1.065. The threshold is 1.05 (squared distance 1.10, cosine similarity
0.45): 2% of same-person photo pairs fall outside it and 1.5% of different-person pairs inside
(aligned crops: 0.8% and 4.0%, equal error 1.7% at 1.01, so on the aligned crops it is the
lenient side). As for ``facenet``, leaning lenient is deliberate: an evaluator that
under-reports matches would overstate the protection. The confidence map has scale 0.1.
"""

from __future__ import annotations

from faceoff.faces.recognizers.facenet import FaceNetRecognizer


class FaceNet512Recognizer(FaceNetRecognizer):
    """FaceNet512 embeddings of MTCNN crops (a black box to the masker's default surrogate).

    Args:
        detect_max_side: Longer side of the copy MTCNN runs on.
    """

    name = "facenet512"
    surrogate = "facenet512"
    metric = "euclidean"
    distance_threshold = 1.05
    confidence_scale = 0.1
    detector_name = "MTCNN"
    unit_centroids = True
