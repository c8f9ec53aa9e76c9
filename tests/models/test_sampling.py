"""Popularity sampler: P(i) ~ support(i)^alpha, cached bulk draws, never unsupported items."""

import numpy as np
import pytest
import torch

from stream_recs.models.sampling import PopularitySampler


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_sample_frequencies_follow_support_power(alpha):
    support = np.array([0.0, 1.0, 4.0, 16.0])
    sampler = PopularitySampler(support, n_sample=1000, alpha=alpha, cache_batches=8, seed=0)
    draws = torch.cat([sampler.sample() for _ in range(40)]).numpy()
    freq = np.bincount(draws, minlength=4) / len(draws)
    expected = np.array([0.0, 1.0, 4.0**alpha, 16.0**alpha])
    expected /= expected.sum()
    np.testing.assert_allclose(freq, expected, atol=0.01)
    np.testing.assert_allclose(sampler.log_probs().exp().numpy(), expected, atol=1e-6)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PopularitySampler(np.zeros(3), n_sample=4)
    with pytest.raises(ValueError):
        PopularitySampler(np.ones(3), n_sample=4, alpha=1.5)
