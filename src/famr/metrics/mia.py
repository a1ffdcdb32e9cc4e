"""Membership-inference efficacy with an SVC on true-label confidence (SalUn / Unlearn-Sparse)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from . import Outputs, register_metric


def svc_mia_efficacy(
    members: Tensor, non_members: Tensor, targets: Tensor, *, seed: int = 0
) -> float:
    """Percentage of ``targets`` that an RBF SVC, fit on members vs non-members, calls non-member.

    The attacker is ``sklearn.svm.SVC(C=3, gamma="auto")`` on a one-dimensional feature (the
    true-label confidence). Members are subsampled (with ``seed``) to at most as many as the
    non-members, as in Unlearn-Sparse's ``SVC_MIA``.

    Args:
        members: Feature values of known training members (the retain set).
        non_members: Feature values of known non-members (test images).
        targets: Feature values of the examples being judged (the forget set).
        seed: Seed of the member subsample.

    Returns:
        100 * fraction of targets predicted non-member: higher = looks less like training data.
    """
    from sklearn.svm import SVC

    members = members.double().cpu().numpy()
    non_members = non_members.double().cpu().numpy()
    if len(members) > len(non_members):
        rng = np.random.default_rng(seed)
        members = rng.choice(members, size=len(non_members), replace=False)
    features = np.concatenate([members, non_members])[:, None]
    is_member = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    attacker = SVC(C=3, gamma="auto", kernel="rbf").fit(features, is_member)
    predicted = attacker.predict(targets.double().cpu().numpy()[:, None])
    return 100.0 * float(np.mean(predicted == 0))


@register_metric(
    "mia_efficacy",
    splits=("forget", "retain", "test_retain"),
    direction="higher = the forget set looks less like training data (more forgotten)",
    retrain="~100 for a forgotten class; ~10-15 for random samples (SalUn, 10 % forget)",
)
def mia_efficacy(outputs: Outputs) -> float:
    """SVC MIA-efficacy: members = retain set, non-members = test images of retained classes.

    The non-members are the retained classes' test images, so that members and non-members
    share the same label set and the attacker learns membership, not class identity.
    """
    return svc_mia_efficacy(
        outputs["retain"].true_label_confidence,
        outputs["test_retain"].true_label_confidence,
        outputs["forget"].true_label_confidence,
    )
