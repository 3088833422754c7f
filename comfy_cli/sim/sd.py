"""Simulated versions of ComfyUI's own text-to-image and upscale nodes, so the README's
realistic workflows (examples/txt2img.json, examples/upscale.json) run with --simulate.

Their inputs are declared as the real nodes declare them (names, types, defaults, limits,
choices), so /object_info, validation, --set/--sweep checks and UI conversion behave as against
a real server. What they compute is a stand-in: the sampler reports one progress step per
step and draws a picture that depends on every input that would change the real one (seed,
steps, cfg, sampler, scheduler, denoise, the prompts' text), at the latent's size (1/8 of the
asked width and height) to stay cheap; upscale nodes resize it.
"""

import hashlib
import json

from .images import Image

SEED_MAX = 0xFFFFFFFFFFFFFFFF
CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
UPSCALE_MODELS = ["RealESRGAN_x4plus.pth", "4x-UltraSharp.pth"]
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_sde", "ddim", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]
SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
SECONDS_PER_STEP = 0.005


class Handle:
    """What flows along MODEL, CLIP, VAE, CONDITIONING, LATENT and UPSCALE_MODEL links."""

    def __init__(self, kind, **data):
        self.kind, self.data = kind, data

    def __repr__(self):
        return f"<{self.kind}>"


def picture(key, width, height):
    """A smooth two-colour gradient chosen by `key`: alike inputs, alike files; different
    inputs, pictures told apart at a glance (a report's grid)."""
    h = hashlib.sha256(key.encode()).digest()
    top, bottom = h[0:3], h[3:6]
    rows = []
    for y in range(height):
        t = y / max(1, height - 1)
        pixel = bytes(int(a + (b - a) * t) for a, b in zip(top, bottom))
        rows.append(pixel * width)
    return Image(width, height, b"".join(rows))


def scaled(image, width, height):
    """Nearest-neighbour resize."""
    width, height = max(1, width), max(1, height)
    src = image.rgb
    rows = []
    for y in range(height):
        sy = y * image.height // height
        line = src[sy * image.width * 3:(sy + 1) * image.width * 3]
        rows.append(b"".join(line[(x * image.width // width) * 3:(x * image.width // width) * 3 + 3]
                             for x in range(width)))
    return Image(width, height, b"".join(rows))


async def run_checkpoint(ctx, ckpt_name):
    return (Handle("MODEL", name=ckpt_name), Handle("CLIP", name=ckpt_name), Handle("VAE", name=ckpt_name)), None


async def run_clip_text(ctx, text, clip):
    return (Handle("CONDITIONING", text=text),), None


async def run_empty_latent(ctx, width, height, batch_size):
    return (Handle("LATENT", width=width, height=height, key=""),), None


async def run_ksampler(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                       denoise=1.0):
    for i in range(steps):
        await ctx.sleep(SECONDS_PER_STEP)
        await ctx.progress(i + 1, steps)
    key = json.dumps([model.data.get("name"), seed, steps, cfg, sampler_name, scheduler, denoise,
                      positive.data.get("text"), negative.data.get("text"), latent_image.data.get("key")])
    return (Handle("LATENT", width=latent_image.data["width"], height=latent_image.data["height"], key=key),), None


async def run_vae_decode(ctx, samples, vae):
    return (picture(samples.data["key"], samples.data["width"] // 8, samples.data["height"] // 8),), None


async def run_upscale_loader(ctx, model_name):
    return (Handle("UPSCALE_MODEL", scale=4),), None


async def run_upscale_with_model(ctx, upscale_model, image):
    scale = upscale_model.data["scale"]
    return (scaled(image, image.width * scale, image.height * scale),), None


async def run_scale_by(ctx, image, upscale_method, scale_by):
    return (scaled(image, round(image.width * scale_by), round(image.height * scale_by)),), None


def node_defs(NodeDef):
    """The NodeDefs, made with nodes.NodeDef (passed in: nodes.py imports this module)."""
    side = ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}]
    return [
        NodeDef("CheckpointLoaderSimple", {"ckpt_name": [CHECKPOINTS, {}]}, run_checkpoint,
                returns=("MODEL", "CLIP", "VAE"), category="loaders", display_name="Load Checkpoint"),
        NodeDef("CLIPTextEncode", {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                                   "clip": ["CLIP", {}]}, run_clip_text, returns=("CONDITIONING",),
                category="conditioning", display_name="CLIP Text Encode (Prompt)"),
        NodeDef("EmptyLatentImage", {"width": side, "height": side,
                                     "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]},
                run_empty_latent, returns=("LATENT",), category="latent", display_name="Empty Latent Image"),
        NodeDef("KSampler", {"model": ["MODEL", {}],
                             "seed": ["INT", {"default": 0, "min": 0, "max": SEED_MAX,
                                              "control_after_generate": True}],
                             "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
                             "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                               "round": 0.01}],
                             "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}],
                             "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
                             "latent_image": ["LATENT", {}],
                             "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
                run_ksampler, returns=("LATENT",), category="sampling", display_name="KSampler"),
        NodeDef("VAEDecode", {"samples": ["LATENT", {}], "vae": ["VAE", {}]}, run_vae_decode, returns=("IMAGE",),
                category="latent", display_name="VAE Decode"),
        NodeDef("UpscaleModelLoader", {"model_name": [UPSCALE_MODELS, {}]}, run_upscale_loader,
                returns=("UPSCALE_MODEL",), category="loaders", display_name="Load Upscale Model"),
        NodeDef("ImageUpscaleWithModel", {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]},
                run_upscale_with_model, returns=("IMAGE",), category="image/upscaling",
                display_name="Upscale Image (using Model)"),
        NodeDef("ImageScaleBy", {"image": ["IMAGE", {}], "upscale_method": [SCALE_METHODS, {}],
                                 "scale_by": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}]},
                run_scale_by, returns=("IMAGE",), category="image/upscaling", display_name="Upscale Image By"),
    ]
