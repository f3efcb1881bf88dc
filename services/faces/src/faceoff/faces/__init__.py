"""Face-embedding models shared by the masker and the evaluator.

:mod:`faceoff.faces.models` holds the networks the attacks differentiate through (surrogates);
:mod:`faceoff.faces.recognizers` the recognisers that judge a photo (some built on those same
networks); :mod:`faceoff.faces.whitebox` the one rule that says which recognisers a protection
has seen. The masker and the evaluator both build on this package and never import each other.
"""

import faceoff.common  # noqa: F401  (applies FACEOFF_DETERMINISTIC before TensorFlow loads)
