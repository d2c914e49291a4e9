"""Convolutional autoencoders: every kind, with strided convolutions in place of dense layers.

An image flattened into a vector loses which pixels are neighbours; a
convolution keeps it, and shares one small kernel across the whole image.
The encoder is ``--channels`` convolutions (kernel 3, stride 2, padding 1:
each halves height and width, rounding up), then a linear coding layer; the
decoder mirrors it with transposed convolutions whose output padding gives
back exactly H x W, odd sizes included. Rows stay flat (N x C*H*W) outside
the model, so scaling, losses, scores and files are those of the MLP.

The kinds' behaviour (sparse coding units, the VAE's heads and sampling)
stays in aecli.models, which mixes ``ConvLayers`` into each kind's class:
this module only builds the layers and runs the encoder body and the decoder.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from aecli.config import ModelConfig

KERNEL, STRIDE, PADDING = 3, 2, 1


class ConvLayers:
    """The conv encoder body and decoder, mixed into the kinds' classes (first in the MRO)."""

    config: ModelConfig
    encoder: nn.ModuleList
    act: object

    def _build(self, config: ModelConfig) -> None:
        chans = (config.image[0], *config.channels)
        grids = config.conv_grids()
        flat = config.conv_features()
        convs = [nn.Conv2d(a, b, KERNEL, STRIDE, PADDING) for a, b in pairwise(chans)]
        self.encoder = nn.ModuleList([*convs, nn.Linear(flat, config.latent)])
        # Transposed convolution i maps grid i+1 back to grid i: 2n - 1 + padding rows,
        # so an even size needs one more (output padding 1) and an odd one none.
        self._paddings = [(1 - h % 2, 1 - w % 2) for h, w in grids[:-1]][::-1]
        self._grid = (chans[-1], *grids[-1])
        back = list(reversed(chans))
        if config.tied:  # the decoder reuses the encoder's kernels and coding weights
            sizes = [flat, *back[1:]]
            self.decoder_bias = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in sizes)
        else:
            ups = [
                nn.ConvTranspose2d(a, b, KERNEL, STRIDE, PADDING, output_padding=p)
                for (a, b), p in zip(pairwise(back), self._paddings, strict=True)
            ]
            self.decoder = nn.ModuleList([nn.Linear(config.latent, flat), *ups])
        self._hidden_layers = convs
        self._mirrored = list(reversed(self.encoder))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Flat rows to images, through the convolutions, and flat again for the coding layer."""
        x = x.reshape(-1, *self.config.image)
        for conv in self._hidden_layers:
            x = self.act(conv(x))  # type: ignore[operator]
        return x.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes to flat outputs: logits for the bce loss, values for mse."""
        coding = self.encoder[-1]
        if self.config.tied:
            biases = list(self.decoder_bias)
            z = F.linear(z, coding.weight.t(), biases[0])
            kernels = [(conv.weight, b) for conv, b in zip(self._mirrored[1:], biases[1:])]
        else:
            z = self.decoder[0](z)
            kernels = [(up.weight, up.bias) for up in list(self.decoder)[1:]]
        z = self.act(z).reshape(-1, *self._grid)  # type: ignore[operator]
        last = len(kernels) - 1
        for i, ((weight, bias), padding) in enumerate(zip(kernels, self._paddings, strict=True)):
            z = F.conv_transpose2d(z, weight, bias, STRIDE, PADDING, output_padding=padding)
            if i < last:
                z = self.act(z)  # type: ignore[operator]
        return z.flatten(1)

    def decoder_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise TypeError("a conv decoder is not a stack of matrices")
