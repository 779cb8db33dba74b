"""Where a training step's time goes: each operation of the compiled step, from a profile, with its
FLOPs, its bytes and the line of jaxnn that made it.

    python benchmarks/step_profile.py [--model cnn] [--calls 20] [--out FILE]

The step is the loss and hand gradient (`nn.value_and_grad`) and Adam at the model's batch (the CNN:
128), compiled once with `nn.jit` and called --calls times under JAX's profiler. The script opts in to
`nn.reuse_host_memory()` first, so that page faults (a cost of the allocator, measured on the own-loop
page) do not blur where the arithmetic's time goes. Each operation XLA runs (a fusion, a convolution,
a dot, a copy) is a thunk in the profile; its time is the median over the calls (an asynchronous one,
XLA's own convolution: from its start to its "end:" event). FLOPs are counted from
the operation's shapes (a convolution or a dot: 2 per multiply-add; an element-wise fusion: one per
output element), bytes as its operands read plus its output written. The two CPU threads run
independent thunks side by side, so the operations' times add up to more than the step's. Written
(default benchmarks/results/cpu/step_profile_MODEL.json):
every operation's row, sorted by time, and the totals per jaxnn source line.
"""

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BYTES = {"f32": 4, "f64": 8, "bf16": 2, "f16": 2, "s32": 4, "s8": 1, "u8": 1, "pred": 1, "s64": 8, "u32": 4}
SHAPE = re.compile(r"\b(f32|f64|bf16|f16|s32|s8|u8|pred|s64|u32)\[([\d,]*)\]")


def shapes_of(text):
    """[(dtype, dims)] of every array shape written in text."""
    return [(t, tuple(int(d) for d in dims.split(",") if d)) for t, dims in SHAPE.findall(text)]


def nbytes(shape):
    return BYTES[shape[0]] * math.prod(shape[1])


def parse_hlo(text):
    """{instruction name: {out, opcode, operands, calls, source}} of the entry computation, the
    computations' bodies (their lines), and {stack frame id: 'file:line function'}."""
    files = dict(re.findall(r'^(\d+) "([^"]+)"$', text.split("FunctionNames")[0], re.M))
    funcs = dict(
        re.findall(r'^(\d+) "([^"]+)"$', text.split("FunctionNames")[1].split("FileLocations")[0], re.M)
    )
    locations = {
        k: (f, fn, ln)
        for k, f, fn, ln in re.findall(
            r"^(\d+) \{file_name_id=(\d+) function_name_id=(\d+) line=(\d+)", text, re.M
        )
    }
    frames = {}
    for k, loc in re.findall(r"^(\d+) \{file_location_id=(\d+) parent_frame_id", text, re.M):
        f, fn, ln = locations[loc]
        frames[k] = f"{os.path.relpath(files[f], os.path.dirname(HERE))}:{ln} {funcs[fn]}"
    bodies, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if head:
            current = head.group(1)
            bodies[current] = []
        elif current and line.startswith("  "):
            bodies[current].append(line)
    instructions = {}
    for line in bodies.get(next(k for k in bodies if "main" in k), []):
        m = re.match(r"\s+(?:ROOT )?%(\S+) = (.+?) (\w[\w-]*)\((.*?)\)(, .*)?$", line)
        if not m:
            continue
        name, out, opcode, operands, rest = m.groups()
        calls = re.search(r"calls=%(\S+?)[,\s]", (rest or "") + " ")
        frame = re.search(r"stack_frame_id=(\d+)", rest or "")
        instructions[name] = {
            "out": shapes_of(out),
            "opcode": opcode,
            "operands": re.findall(r"%(\S+?)(?:[,)]|$)", operands),
            "calls": calls.group(1) if calls else None,
            "source": frames.get(frame.group(1), "") if frame else "",
        }
    return instructions, bodies, frames


def flops_of(lines, out_shapes):
    """FLOPs of an instruction from its own line and its called computation's lines: convolutions
    and dots from their operands' shapes, else one per output element."""
    shapes = {}  # each value's dims, from the lines that define it
    for line in lines:
        m = re.match(r"\s+(?:ROOT )?%(\S+) = (\S+)", line)
        if m and shapes_of(m.group(2)):
            shapes[m.group(1)] = shapes_of(m.group(2))[0][1]
    total = 0
    for line in lines:
        m = re.match(r"\s+(?:ROOT )?%\S+ = (\S+) (convolution|dot)\(%([^,]+), %([^)]+)\)(.*)$", line)
        if not m:
            continue
        out, opcode, lhs, rhs, rest = m.groups()
        out_elements = math.prod(shapes_of(out)[0][1])
        if opcode == "convolution":
            window = re.search(r"window=\{size=([\dx]+)", rest)
            taps = math.prod(int(v) for v in window.group(1).split("x")) if window else 1
            labels = re.search(r"dim_labels=\w+_(\w+)->", rest)
            kernel = shapes.get(rhs, ())
            inputs = kernel[labels.group(1).index("i")] if labels and kernel else 1
            total += 2 * out_elements * taps * inputs
        else:
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
            dims = [int(d) for d in contracting.group(1).split(",") if d] if contracting else []
            lhs_dims = shapes.get(lhs, ())
            if all(d < len(lhs_dims) for d in dims):  # else the operand's shape is not in sight
                total += 2 * out_elements * math.prod(lhs_dims[d] for d in dims)
    if total == 0 and out_shapes:
        total = sum(math.prod(s[1]) for s in out_shapes)
    return total


def profile(model_name, calls):
    import jax  # noqa: PLC0415
    from roofline import adam_step, workloads  # noqa: PLC0415  (the same models and step)

    import jaxnn as nn  # noqa: PLC0415
    from jaxnn import throughput  # noqa: PLC0415

    model, loss, x, labels = workloads()[model_name]
    step, carry = adam_step(model, loss, x, labels)
    jitted = nn.jit(step, model, donate_argnums=0)
    compiled = jitted.lower(carry).compile()
    instructions, bodies, frames = parse_hlo(compiled.as_text())
    for _ in range(3):
        carry, value = jitted(carry)
    jax.block_until_ready(value)
    seconds = []
    for _ in range(calls):
        t0 = time.perf_counter()
        carry, value = jitted(carry)
        jax.block_until_ready(value)
        seconds.append(time.perf_counter() - t0)
    folder = tempfile.mkdtemp(prefix="step-profile-")
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        for _ in range(calls):
            carry, value = jitted(carry)
        jax.block_until_ready(value)
    trace = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)[0]
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    busy = collections.defaultdict(list)  # each call's seconds
    starts = collections.defaultdict(list)  # an asynchronous operation: its start, then "end: NAME"
    for e in sorted((e for e in events if e.get("ph") == "X"), key=lambda e: e.get("ts", 0.0)):
        name = e.get("name", "")
        if name.startswith("end: ") and starts[name[5:]]:
            ended = e["ts"] + e.get("dur", 0.0)  # the time from its start's end to its end's end
            busy[name[5:]][-1] += (ended - starts[name[5:]].pop(0)) / 1e6
        elif name in instructions:
            busy[name].append(e.get("dur", 0.0) / 1e6)
            starts[name].append(e["ts"] + e.get("dur", 0.0))
    import numpy as np  # noqa: PLC0415

    typical = {name: float(np.median(seconds)) for name, seconds in busy.items()}  # robust to a stall
    rows = []
    for name, spent in sorted(typical.items(), key=lambda kv: -kv[1]):
        ins = instructions[name]
        lines = bodies.get(ins["calls"], []) if ins["calls"] else []
        entry = bodies[next(k for k in bodies if "main" in k)]
        own = [line for line in entry if f"%{name} = " in line]
        own += [line for line in entry if any(f"%{o} = " in line for o in ins["operands"])]  # their shapes
        operands = [instructions[o]["out"] for o in ins["operands"] if o in instructions]
        moved = sum(nbytes(s) for s in ins["out"]) + sum(nbytes(s) for group in operands for s in group)
        flops = flops_of(lines + own, ins["out"])
        inner = [m.group(1) for line in lines for m in [re.search(r"stack_frame_id=(\d+)", line)] if m]
        source = ins["source"] or (frames.get(inner[0], "") if inner else "")
        rows.append(
            {
                "op": name,
                "opcode": ins["opcode"],
                "source": source,
                "ms": 1e3 * spent,
                "flops": flops,
                "bytes": moved,
                "gflops": flops / spent / 1e9 if spent else 0.0,
                "gb_per_s": moved / spent / 1e9 if spent else 0.0,
            }
        )
    by_source = collections.defaultdict(lambda: {"ms": 0.0, "flops": 0, "bytes": 0, "ops": 0})
    for row in rows:
        entry = by_source[row["source"]]
        entry["ms"] += row["ms"]
        entry["flops"] += row["flops"]
        entry["bytes"] += row["bytes"]
        entry["ops"] += 1
    from jaxnn_lab.bench import machine, spread  # noqa: PLC0415

    return {
        "machine": machine(),
        "model": model_name,
        "config": {"calls": calls, "reuse_host_memory": True, "compiled_with": "nn.jit"},
        "step_seconds": spread(seconds),
        "step_flops": throughput.program_flops(compiled),
        "matmul_ceiling_gflops": throughput.measure_ceiling(),
        "ops_ms_total": float(np.sum([r["ms"] for r in rows])),
        "ops": rows,
        "by_source": dict(sorted(by_source.items(), key=lambda kv: -kv[1]["ms"])),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", choices=["mlp", "cnn", "char transformer", "resnet block"])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.calls < 1:
        sys.exit("error: --calls must be at least 1")
    import jaxnn as nn  # noqa: PLC0415

    nn.reuse_host_memory()  # first thing: the allocator's page faults out of the picture
    from jaxnn_lab.bench import write_json  # noqa: PLC0415

    result = profile(args.model, args.calls)
    out = args.out or os.path.join(
        HERE, "results", "cpu", f"step_profile_{args.model.replace(' ', '_')}.json"
    )
    write_json(out, result)
    step = result["step_seconds"]["median"]
    print(
        f"{args.model}: step {1e3 * step:.1f} ms, {result['step_flops'] / 1e9:.2f} GFLOP, "
        f"{result['step_flops'] / step / 1e9:.0f} GFLOP/s = "
        f"{result['step_flops'] / step / 1e9 / result['matmul_ceiling_gflops']:.2f} of the matmul ceiling "
        f"({result['matmul_ceiling_gflops']:.0f} GFLOP/s); ops' times add to {result['ops_ms_total']:.1f} ms"
    )
    print(f"{'ms':>6} {'GFLOP':>7} {'MB':>7} {'GFLOP/s':>8} {'GB/s':>6}  op (source)")
    for row in result["ops"][:25]:
        print(
            f"{row['ms']:6.2f} {row['flops'] / 1e9:7.3f} {row['bytes'] / 1e6:7.1f} {row['gflops']:8.1f} "
            f"{row['gb_per_s']:6.1f}  {row['op']} ({row['source']})"
        )
    print("\nby source line:")
    for source, entry in list(result["by_source"].items())[:15]:
        print(f"{entry['ms']:6.2f} ms {entry['flops'] / 1e9:7.3f} GFLOP {entry['ops']:3d} ops  {source}")


if __name__ == "__main__":
    main()
