"""Growing a model's vocabulary: one new row in the token embedding and one new output unit per
new word, every other weight untouched.

Each new word starts as a copy of <unk>'s rows. Until it was discovered, the word reached the
model as <unk>, so <unk>'s embedding is what the model has learned about it (and the other rare
words) as input, and <unk>'s output unit scores how likely an unknown word is next: in the new
word's contexts, the new word starts where <unk> stood and training separates the two. The old
words' rows, and so their logits for any input of old words, stay exactly what they were.

Plain NumPy on the weights list, in the layer order task/model.py builds (token embedding first,
the output Dense's kernel and bias last): no TensorFlow on the server for this.
"""

from __future__ import annotations

import numpy as np

from task.data.vocab import UNK_ID


def grow_weights(weights: list[np.ndarray], new_size: int) -> list[np.ndarray]:
    """The model's weights for a vocabulary of `new_size` words, old ids unchanged."""
    embedding, kernel, bias = weights[0], weights[-2], weights[-1]
    size = embedding.shape[0]
    if embedding.ndim != 2 or kernel.shape != (embedding.shape[1], size) or bias.shape != (size,):
        raise ValueError(f"not a model built by task/model.py: embedding {embedding.shape}, output kernel "
                         f"{kernel.shape}, output bias {bias.shape}")
    if new_size < size:
        raise ValueError(f"a vocabulary only grows: {size} words now, {new_size} asked")
    extra = new_size - size
    if extra == 0:
        return list(weights)
    grown = list(weights)
    grown[0] = np.concatenate([embedding, np.repeat(embedding[UNK_ID : UNK_ID + 1], extra, axis=0)])
    grown[-2] = np.concatenate([kernel, np.repeat(kernel[:, UNK_ID : UNK_ID + 1], extra, axis=1)], axis=1)
    grown[-1] = np.concatenate([bias, np.repeat(bias[UNK_ID : UNK_ID + 1], extra)])
    return grown
