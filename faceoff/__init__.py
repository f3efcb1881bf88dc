"""Face-Off: adversarial face obfuscation.

The photo flows one way: :mod:`faceoff.detector` finds the faces, :mod:`faceoff.masker` computes
and pastes back the adversarial perturbation, and :mod:`faceoff.evaluator` checks whether
independent recognisers would still match the protected face. :mod:`faceoff.common` holds what the
three gRPC services share, :mod:`faceoff.v1` the generated protobuf contract and
:mod:`faceoff.sdk` the client that apps call before upload.
"""

__version__ = "0.1.0"
