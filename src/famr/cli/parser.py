"""The ``famr`` argument parser: every command, flag and help text in one place."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..attacks import ATTACKS
from ..data.request import GROUPINGS
from ..methods import METHODS
from ..models import list_models
from .common import _count_or_all, _fraction, _non_negative


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2), like every other famr error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file of config fields")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="set any config field (repeatable)"
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--seed", type=int)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default="digits", help="data set: digits, cifar10, imagefolder (default digits)"
    )
    parser.add_argument("--data-root", help="folder holding the data set's files")
    parser.add_argument(
        "--classes-file", help="imagefolder: use only the class folders listed (one per line)"
    )
    parser.add_argument(
        "--image-size", type=int, help="imagefolder: side of the centre-cropped images"
    )
    parser.add_argument(
        "--workers", type=int, help="imagefolder: image-decoding worker processes (default 2)"
    )
    parser.add_argument(
        "--data-path",
        dest="data_path",
        choices=["auto", "tensors", "files"],
        help="imagefolder: 'tensors' decodes the whole tree once; 'files' decodes only what a "
        "request needs (forget set, retain buffer, evaluation samples); 'auto' (default) takes "
        "files when the decoded tree would exceed 1 GiB",
    )
    parser.add_argument(
        "--coarse",
        choices=sorted(GROUPINGS),
        help="relabel with a documented coarse grouping (cifar10: road vehicles, air & sea, "
        "pets, large animals, small animals); for concept requests",
    )
    parser.add_argument(
        "--style",
        help="render a seeded fraction of every split in a fixed style, e.g. sketch:0.2; for "
        "style requests",
    )
    parser.add_argument("--style-seed", type=int, default=0, help="seed of --style (default 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _lambda_methods() -> list[str]:
    """Methods with an anchor strength ``lam`` that run on a class request's forget and retain
    sets (what ``sweep-lambda`` varies)."""
    from ..config import field_names

    return [
        e.name
        for e in METHODS
        if "lam" in field_names(e.meta["config"]) and set(e.meta["needs"]) <= {"forget", "retain"}
    ]


def build_parser() -> argparse.ArgumentParser:
    """The ``famr`` argument parser."""
    parser = _Parser(prog="famr", description="Post-hoc machine unlearning for image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_demo(sub)
    _add_train(sub)
    _add_forget(sub)
    _add_import(sub)
    _add_certify(sub)
    _add_verify(sub)
    _add_sweep_lambda(sub)
    _add_attack(sub)
    sub.add_parser("methods", help="list the unlearning methods")
    sub.add_parser("metrics", help="list the metrics and their directions")
    return parser


def _add_demo(sub) -> None:
    """The ``demo`` command's flags."""
    demo = sub.add_parser(
        "demo",
        help="train, retrain and unlearn one digit with every method; print and save a report",
    )
    demo.add_argument("--forget-class", type=int, default=3, help="digit to forget (default 3)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo's own files in an existing output folder (nothing else in it)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--arch", default="small_cnn")
    demo.add_argument("--device")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train(sub) -> None:
    """The ``train`` command's flags."""
    tr = sub.add_parser("train", help="train a model and save it as a checkpoint")
    _add_data_flags(tr)
    tr.add_argument("--arch", default="small_cnn", help=f"architecture: {', '.join(list_models())}")
    tr.add_argument(
        "--arch-arg",
        dest="arch_arg",
        action="append",
        metavar="KEY=VALUE",
        help="an argument of the architecture's constructor, recorded in the checkpoint "
        "(repeatable; VALUE read as JSON when it parses, else as text), e.g. for a timm ViT "
        "at 64 px: --arch timm:vit_tiny_patch16_224 --arch-arg img_size=64 --arch-arg "
        "patch_size=8",
    )
    tr.add_argument(
        "--exclude-classes", help="leave these classes out of training (retrain reference)"
    )
    tr.add_argument(
        "--init", help="start from this checkpoint's weights (e.g. one made by famr import)"
    )
    tr.add_argument(
        "--validation",
        type=_fraction,
        metavar="FRACTION",
        help="hold this share of every class out of training (seeded; recorded in the "
        "checkpoint): famr forget then works on the rest, and famr attack fits its linear "
        "probe on it",
    )
    tr.add_argument("--validation-seed", type=int, default=0, help="seed of --validation")
    tr.add_argument("--out", required=True, help="output .safetensors path")
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    _add_config_flags(tr)


def _add_forget(sub) -> None:
    """The ``forget`` command's flags."""
    fg = sub.add_parser("forget", help="unlearn classes from a saved model")
    _add_data_flags(fg)
    fg.add_argument(
        "--checkpoint", required=True, help="input .safetensors checkpoint (never modified)"
    )
    what = fg.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help="class ids to forget, comma separated")
    what.add_argument(
        "--indices",
        help="training examples to forget: a file of training-set indices (integers separated "
        "by spaces, commas or new lines, or a JSON list), or random:FRACTION (e.g. random:0.1)",
    )
    what.add_argument(
        "--concept",
        help="a fine class (name or id) to forget inside its coarse class; needs --coarse",
    )
    what.add_argument(
        "--forget-style",
        action="store_true",
        help="forget the stylised training images; needs --style",
    )
    fg.add_argument(
        "--forget-seed",
        type=int,
        default=0,
        help="seed of the random:FRACTION choice (default 0)",
    )
    fg.add_argument(
        "--audit",
        help="audit record of this request (default: OUT with .audit.json; checked by famr verify)",
    )
    fg.add_argument("--method", default="famr", help=f"method: {', '.join(METHODS.names())}")
    fg.add_argument("--lam", type=float, help="FAMR anchor strength lambda")
    fg.add_argument("--reference", help="checkpoint of a retrained reference, for gaps to retrain")
    fg.add_argument(
        "--holdout",
        choices=["validation", "test"],
        help="unseen examples for methods that calibrate on them (famr on a sample request, "
        "famr_quantile): 'validation' = the retained classes' images of "
        "the validation split the checkpoint was trained without (famr train --validation F). "
        "'test' is refused: it would calibrate on the images that are then scored",
    )
    fg.add_argument(
        "--anchor",
        help="l2 anchor point of anchored methods (default: --checkpoint itself). For a second "
        "request, pass the original model and the cumulative request (e.g. --classes 3,5 after "
        "3): the step then solves the whole request anchored to the original, starting from "
        "the previous model",
    )
    fg.add_argument(
        "--retain-limit",
        dest="retain_limit",
        type=_count_or_all,
        metavar="N|all",
        help="retain images handed to a method that trains on the retain set (a seeded sample; "
        "methods with a retain buffer draw their buffer_size from all of it). Default: 10000 "
        "on the file data path, all on the tensor path",
    )
    fg.add_argument(
        "--eval-sample",
        dest="eval_sample",
        type=_count_or_all,
        metavar="N|all",
        help="images scored per evaluation split other than the forget set (retain, "
        "test_retain, test_forget; a seeded sample, recorded, re-drawn by famr verify). "
        "Default: 2000 on the file data path, all on the tensor path",
    )
    fg.add_argument("--out", required=True, help="output .safetensors path")
    fg.add_argument("--overwrite", action="store_true")
    fg.add_argument(
        "--max-retain-drop",
        type=_non_negative,
        default=10.0,
        metavar="POINTS",
        help="refuse (exit 3, nothing written) a result whose test accuracy on the retained "
        "data is more than this many points below the input model's (default 10)",
    )
    fg.add_argument(
        "--write-anyway",
        action="store_true",
        help="write a refused result (not certified, or over --max-retain-drop) regardless; "
        "the checkpoint's metadata and audit record say it was refused",
    )
    fg.add_argument("--quiet", action="store_true")
    _add_config_flags(fg)


def _add_import(sub) -> None:
    """The ``import`` command's flags."""
    im = sub.add_parser("import", help="convert another code base's weights into a famr checkpoint")
    im.add_argument(
        "--weights",
        required=True,
        help=".safetensors, or a torch.save file of tensors (read with weights_only)",
    )
    im.add_argument(
        "--arch",
        required=True,
        help=f"architecture: {', '.join(list_models())}, torchvision:<name>, timm:<name>, or "
        "transformers (with --hf-config)",
    )
    im.add_argument(
        "--hf-config",
        help="a Hugging Face transformers image classifier's config.json, or the folder "
        "save_pretrained wrote (read locally, never downloaded)",
    )
    im.add_argument(
        "--num-classes",
        type=int,
        help="output classes (default: the --hf-config's label count, else 10)",
    )
    im.add_argument("--in-channels", type=int, default=3)
    im.add_argument(
        "--mean", help="input normalisation mean, comma separated (e.g. 0.4914,0.4822,0.4465)"
    )
    im.add_argument("--std", help="input normalisation std, comma separated")
    im.add_argument(
        "--strip-prefix", default="", help="remove this key prefix, e.g. module. (DataParallel)"
    )
    im.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="replace a key prefix (repeatable)",
    )
    im.add_argument(
        "--replace-head",
        action="store_true",
        help="load a classifier with another class count, then give it a fresh "
        "--num-classes head (e.g. ImageNet weights for a 10-class task)",
    )
    im.add_argument("--seed", type=int, default=0, help="seed of a replaced head (default 0)")
    im.add_argument("--out", required=True, help="output .safetensors path")
    im.add_argument("--overwrite", action="store_true")


def _add_certify(sub) -> None:
    """The ``certify`` command's flags."""
    ce = sub.add_parser("certify", help="write the FAMR certificate of an unlearned checkpoint")
    _add_data_flags(ce)
    ce.add_argument("--original", required=True, help="checkpoint before unlearning")
    ce.add_argument("--unlearned", required=True, help="checkpoint after unlearning")
    ce.add_argument("--classes", required=True, help="the forgotten class ids, comma separated")
    ce.add_argument(
        "--lam",
        type=float,
        help="anchor strength (default: from the unlearned checkpoint's config)",
    )
    ce.add_argument(
        "--target",
        choices=["uniform", "retained"],
        help="uniform target (default: from its config)",
    )
    ce.add_argument(
        "--out", required=True, help="output folder for certificate.json and certificate.md"
    )
    ce.add_argument("--overwrite", action="store_true")


def _add_verify(sub) -> None:
    """The ``verify`` command's flags."""
    ve = sub.add_parser(
        "verify",
        help="check an audit record: file hashes, the forget set, and the forget metrics",
    )
    ve.add_argument("record", help="the .audit.json written by famr forget")
    ve.add_argument("--data-root", help="data folder (default: the one in the record)")
    ve.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    ve.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest accepted difference of a re-evaluated metric, in points (default 0.01)",
    )


def _add_sweep_lambda(sub) -> None:
    """The ``sweep-lambda`` command's flags."""
    sw = sub.add_parser(
        "sweep-lambda", help="run FAMR over a lambda grid; plot forgetting vs retention"
    )
    _add_data_flags(sw)
    sw.add_argument("--checkpoint", required=True)
    sw.add_argument("--classes", required=True)
    sw.add_argument("--lams", default="0.01,0.1,1,10,100", help="comma-separated lambda grid")
    sw.add_argument("--method", default="famr", choices=_lambda_methods())
    sw.add_argument(
        "--out", required=True, help="output folder for sweep.json, sweep.md, lambda_path.png"
    )
    sw.add_argument("--overwrite", action="store_true")
    sw.add_argument("--config")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE")


def _add_attack(sub) -> None:
    """The ``attack`` command's flags."""
    at = sub.add_parser(
        "attack",
        help="attack an unlearned checkpoint (linear probe, relearning) beside the original and "
        "a retrained one",
    )
    _add_data_flags(at)
    at.add_argument("--unlearned", required=True, help="the unlearned checkpoint")
    at.add_argument("--original", required=True, help="the checkpoint before unlearning")
    at.add_argument(
        "--retrained",
        help="a checkpoint retrained without the forget set: the level real forgetting reaches",
    )
    request = at.add_mutually_exclusive_group()
    request.add_argument(
        "--classes",
        help="the request (default: the one the unlearned checkpoint's metadata records)",
    )
    request.add_argument("--indices", help="as for famr forget")
    request.add_argument("--concept", help="as for famr forget")
    request.add_argument("--forget-style", action="store_true", help="as for famr forget")
    at.add_argument("--forget-seed", type=int, default=0, help="seed of random:FRACTION")
    at.add_argument(
        "--attacks",
        help=f"comma-separated, from {', '.join(ATTACKS.names())} (default: all)",
    )
    at.add_argument(
        "--set",
        action="append",
        metavar="ATTACK.KEY=VALUE",
        help="an attack option, e.g. relearn.steps=20 or linear_probe.layer=layer3 (repeatable)",
    )
    at.add_argument(
        "--out", required=True, help="output folder for attack.json, attack.md, attack.png"
    )
    at.add_argument("--overwrite", action="store_true")
