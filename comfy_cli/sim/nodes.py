"""The simulated node types: input specs (for /object_info and validation)
and what each node does when it runs.

A node's ``run`` is a coroutine ``run(ctx, **inputs) -> (outputs, ui)``:
``outputs`` is a tuple matching ``returns`` and ``ui`` the dict shown to
clients in ``executed`` and history (None for plain compute nodes).  ``ctx``
is the engine's per-node context (sleep, progress, text frames, storage).
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Dict, Optional, Tuple

from .images import Image, blend, seeded_image, sized_image

SEED_MAX = 0xFFFFFFFFFFFFFFFF


@dataclass
class NodeDef:
    name: str
    required: Dict[str, list]
    run: Callable[..., Awaitable[Tuple[tuple, Optional[dict]]]]
    optional: Dict[str, list] = field(default_factory=dict)
    hidden: Dict[str, str] = field(default_factory=dict)
    returns: Tuple[str, ...] = ()
    output_node: bool = False
    category: str = "testing"
    description: str = ""
    display_name: str = ""  # the real server's, for its own node types


    def input_spec(self, name: str):
        """(type, options, 'required'|'optional') for a declared input, else None."""
        for section, specs in (("required", self.required), ("optional", self.optional)):
            if name in specs:
                spec = specs[name]
                return spec[0], (spec[1] if len(spec) > 1 else {}), section
        return None

    def declared_inputs(self):
        return list(self.required) + list(self.optional)

    def info(self, input_files=()) -> dict:
        """The /object_info description, in the real server's shape. A file input (a combo with
        `image_upload`) lists `input_files`, the input folder's files, as the real one does."""
        inputs = {"required": {name: _with_files(spec, input_files) for name, spec in self.required.items()}}
        if self.optional:
            inputs["optional"] = self.optional
        if self.hidden:
            inputs["hidden"] = self.hidden
        return {
            "input": inputs,
            "input_order": {k: list(v) for k, v in inputs.items()},
            "output": list(self.returns),
            "output_is_list": [False] * len(self.returns),
            "output_name": list(self.returns),
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": "custom_nodes.comfy_cli_sim" if self.name.startswith("Test") else "nodes",
            "category": self.category,
            "output_node": self.output_node,
        }


def _with_files(spec, input_files):
    if isinstance(spec[0], list) and len(spec) > 1 and spec[1].get("image_upload"):
        return [sorted(input_files), spec[1]]
    return spec


def _image(value, name="image") -> Image:
    # A literal where an IMAGE belongs passes validation on the real server
    # too; it blows up at run time, so do the same.
    if not isinstance(value, Image):
        raise TypeError(f"{name}: expected an IMAGE, got {type(value).__name__}")
    return value


STEPS = ["INT", {"default": 10, "min": 0, "max": 100000}]
SIDE = ["INT", {"default": 64, "min": 1, "max": 2048}]
SECONDS = ["FLOAT", {"default": 0.1, "min": 0.0, "max": 3600.0, "step": 0.01}]
# Like the real samplers' seeds: the page adds a "control after generate" widget after it.
SEED = ["INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}]


async def _steps(ctx, steps, seconds_per_step, seed, image=None, preview=False):
    for i in range(steps):
        await ctx.sleep(seconds_per_step)
        await ctx.progress(i + 1, steps, preview=preview)
    out = seeded_image(seed)
    if image is not None:
        out = blend(out, _image(image))
    return (out,), None


async def run_test_steps(ctx, steps, seconds_per_step, seed, image=None):
    return await _steps(ctx, steps, seconds_per_step, seed, image)


async def run_test_steps_preview(ctx, steps, seconds_per_step, seed):
    return await _steps(ctx, steps, seconds_per_step, seed, preview=True)


async def run_test_fail(ctx, steps, fail_at, seconds_per_step, message, seed):
    i = 0
    for i in range(1, steps + 1):
        await ctx.sleep(seconds_per_step)
        await ctx.progress(i, steps)
        if i >= fail_at:
            break
    # A TestFail always fails; fail_at beyond steps just fails at the end.
    raise RuntimeError(f"{message} (at step {i} of {steps})")


async def run_test_flaky(ctx, steps, seconds_per_step, seed):
    # Fails the first time this server runs it with this seed, then works: for --retry tests.
    seen = ctx.engine.__dict__.setdefault("flaky_seen", set())
    first = seed not in seen
    seen.add(seed)
    result = await _steps(ctx, steps, seconds_per_step, seed)
    if first:
        raise RuntimeError(f"TestFlaky: fails the first time it runs with seed {seed}")
    return result


async def run_test_image(ctx, seed, width, height, noise, noise_seed):
    return (sized_image(seed, width, height, noise, noise_seed),), None


async def run_test_save_text(ctx, text, filename_prefix):
    filename, subfolder = ctx.storage.save_bytes(text.encode("utf-8"), filename_prefix, "output", ".txt")
    return (), {"files": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}


async def run_test_log(ctx, image, text):
    image = _image(image)
    ctx.send_text(text)
    return (image,), {"text": [text, f"mean={image.mean():.6f}"]}


def _png_text(ctx):
    # Like SaveImage: the API graph and any extra_pnginfo go into the PNG.
    chunks = [("prompt", json.dumps(ctx.prompt))]
    extra = ctx.extra_data.get("extra_pnginfo")
    if isinstance(extra, dict):
        chunks += [(str(k), json.dumps(v)) for k, v in extra.items()]
    return chunks


async def run_save_image(ctx, images, filename_prefix="ComfyUI"):
    filename, subfolder = ctx.storage.save_png(_image(images, "images"), filename_prefix,
                                               "output", _png_text(ctx))
    return (), {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}


async def run_preview_image(ctx, images):
    filename, subfolder = ctx.storage.save_png(_image(images, "images"), ctx.storage.temp_prefix,
                                               "temp", _png_text(ctx))
    return (), {"images": [{"filename": filename, "subfolder": subfolder, "type": "temp"}]}


async def run_load_image(ctx, image):
    # The real node decodes the file; the simulator has no image decoder, so it checks the
    # file is in the input folder and derives a stable image from its bytes.
    sub, _, name = image.rpartition("/") if isinstance(image, str) else ("", "", "")
    status, path = ctx.storage.view_path(name, "input", sub or None)
    if status != 200:
        raise RuntimeError(f"Invalid image file: {image}")
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).digest()
    return (seeded_image(int.from_bytes(digest[:8], "big")), None), None


_HIDDEN_SAVE = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODES: Dict[str, NodeDef] = {n.name: n for n in [
    NodeDef("TestSteps", {"steps": STEPS, "seconds_per_step": SECONDS, "seed": SEED},
            run_test_steps, optional={"image": ["IMAGE", {}]}, returns=("IMAGE",),
            description="Sleeps `steps` times, reporting progress; outputs a seeded 64x64 image."),
    NodeDef("TestStepsPreview", {"steps": STEPS, "seconds_per_step": SECONDS, "seed": SEED},
            run_test_steps_preview, returns=("IMAGE",),
            description="Like TestSteps, with a JPEG preview on every progress update."),
    NodeDef("TestFail", {"steps": STEPS, "fail_at": ["INT", {"default": 3, "min": 0, "max": 100000}],
                         "seconds_per_step": SECONDS,
                         "message": ["STRING", {"default": "TestFail: deliberate failure"}],
                         "seed": SEED},
            run_test_fail, returns=("IMAGE",),
            description="Reports progress, then raises RuntimeError at step `fail_at`."),
    NodeDef("TestFlaky", {"steps": STEPS, "seconds_per_step": SECONDS, "seed": SEED},
            run_test_flaky, returns=("IMAGE",),
            description="Like TestSteps, but fails the first time a server runs it with a given seed."),
    NodeDef("TestImage", {"seed": SEED, "width": SIDE, "height": SIDE,
                          "noise": ["INT", {"default": 0, "min": 0, "max": 255}],
                          "noise_seed": ["INT", {"default": 0, "min": 0, "max": SEED_MAX}]},
            run_test_image, returns=("IMAGE",),
            description="A seeded picture of any size; `noise` moves each channel by up to that many levels."),
    NodeDef("TestSaveText", {"text": ["STRING", {"default": "", "multiline": True}],
                             "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            run_test_save_text, output_node=True,
            description="Saves the text as PREFIX_NNNNN_.txt in the output folder (a file that is not an image)."),
    NodeDef("TestLog", {"image": ["IMAGE", {}], "text": ["STRING", {"default": "", "multiline": True}]},
            run_test_log, returns=("IMAGE",), output_node=True,
            description="Sends a progress-text frame and shows the text and the image mean."),
    NodeDef("SaveImage", {"images": ["IMAGE", {}],
                          "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            run_save_image, hidden=_HIDDEN_SAVE, output_node=True, category="image", display_name="Save Image",
            description="Saves the input images to your ComfyUI output directory."),
    NodeDef("LoadImage", {"image": [[], {"image_upload": True}]}, run_load_image,
            returns=("IMAGE", "MASK"), category="image", display_name="Load Image",
            description="Loads an image from the input folder (the simulator derives it from the file's bytes)."),
    NodeDef("PreviewImage", {"images": ["IMAGE"]},
            run_preview_image, hidden=_HIDDEN_SAVE, output_node=True, category="image", display_name="Preview Image",
            description="Saves the input images to the temp directory."),
]}

# ComfyUI's own text-to-image and upscale nodes, for the README's realistic examples.
from . import sd  # noqa: E402 (it needs NodeDef, defined above)

NODES.update({n.name: n for n in sd.node_defs(NodeDef)})
