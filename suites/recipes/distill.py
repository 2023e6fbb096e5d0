"""Knowledge distillation: a smaller student of the same family, next to its labels-only twin.

The student is the model's own factory with ``ModelSpec.student`` merged into the base's
factory kwargs (e.g. mlp-digits: ``hidden [128, 64] -> [32]``). Two variants, identical
but for the loss -- same seed (so the same initial weights), same epochs, learning rate,
batch size and batch order as each other; the epochs are the teacher's (its training info),
lr / batch size too where the training info records them (else 3e-3 / 64):

- ``distilled``: (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher || student) at
  temperature T (Hinton et al. 2015; T = 4, alpha = 0.7), teacher = the fp32 base;
- ``student-labels``: CE(labels) alone.

So the gain from distillation is the difference of the two measured accuracies, not
assumed. Models without a student spec or without labels are refused by name.
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import BenchError
from suites.recipes import _common as C


def apply(base, out_dir: Path, *, soft: bool, temperature: float = 4.0, alpha: float = 0.7,
          epochs: int | None = None, lr: float | None = None, batch_size: int | None = None) -> dict:
    from harness.plan.plugins import load_object
    from suites import zoo
    from suites.zoo.common import seed_everything, train_classifier

    name = "distilled" if soft else "student-labels"
    spec = zoo.get(base.name)
    if not spec.student:
        raise BenchError(f"{name}: model {base.name} has no student architecture (ModelSpec.student is not set)")
    x, y = C.train_split(base)
    if y is None:
        raise BenchError(f"{name}: model {base.name} has no labels (task '{spec.task}'); the student recipes train "
                         "on labels (student-labels) and compare against that")
    teacher = C.base_module(base, name)
    tm = base.meta["torch"]
    kwargs = {**tm.get("kwargs", {}), **spec.student}
    epochs = int(epochs if epochs is not None else C.training_epochs(base))
    lr = float(lr if lr is not None else C.training_lr(base))
    batch_size = int(batch_size if batch_size is not None else (base.meta.get("training") or {}).get("batch_size", 64))
    seed = spec.seed
    soft_targets = C.predict(teacher, x) if soft else None

    seed_everything(seed)
    student = load_object(tm["factory"])(**kwargs)
    with C.one_thread():
        info = train_classifier(student, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                soft_targets=soft_targets, temperature=temperature if soft else 1.0,
                                alpha=alpha if soft else 0.0)
    torch_meta = C.save_torch(student, out_dir, tm["factory"], kwargs)
    onnx_path = C.export(student, base, out_dir)
    teacher_params, student_params = C.count_params(teacher), C.count_params(student)
    if student_params >= teacher_params:
        raise BenchError(f"{name}: model {base.name}: the student ({student_params} params) is not smaller than "
                         f"the teacher ({teacher_params})")
    params = {"student_kwargs": spec.student, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    if soft:
        params.update(temperature=temperature, alpha=alpha)
    return {
        "precision": "fp32",
        "recipe": {"name": name, "params": params},
        "torch": torch_meta,
        "distillation": ({"teacher": f"{base.name}/fp32", "temperature": temperature, "alpha": alpha,
                          "loss": "(1-alpha)*CE + alpha*T^2*KL(softmax(t/T) || softmax(s/T))"}
                         if soft else None),
        "teacher_params": teacher_params,
        "student_params": student_params,
        "params_before": teacher_params,
        "params_after": student_params,
        "training": info,
        "check": C.ort_check(onnx_path, base),
    }
