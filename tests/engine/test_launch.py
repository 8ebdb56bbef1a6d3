"""Cluster launch recipes: SLURM and Kubernetes environments start one multi-process run.

The detection (`engine.runtime.launch.cluster_settings`) is checked on environments written
here; the recipes in docs/launch/ are parsed and checked against it; and two local processes
(slow) train one run with each cluster's variables faked on loopback, like the multi-process
test of test_engine_parallel.py, matching one process with as many devices. No real cluster.
"""

import os
import random
import re
import shlex
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from engine_helpers import device_env, read_state

from engine.config import ConfigError
from engine.config import cli as settings_cli
from engine.runtime import launch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SBATCH = os.path.join(ROOT, "docs", "launch", "slurm.sbatch")
MANIFEST = os.path.join(ROOT, "docs", "launch", "k8s-job.yaml")
LAUNCH_FLAGS = ("--coordinator_address", "--num_processes", "--process_id")


def _slurm_env(procid=0, ntasks=2, job_id=5054464, nodes="localhost") -> dict:
    return {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_NTASKS": str(ntasks),
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid),
        "SLURM_STEP_NUM_NODES": "1",
    }


# --- The detection, on written environments ----------------------------------------------------


def test_a_slurm_step_of_several_tasks_is_left_to_jax_detection():
    assert launch.cluster_settings(_slurm_env(1)) == (
        "slurm",
        {"cluster_detection_method": "slurm"},
    )


def test_slurm_variables_are_those_jax_reads_and_give_the_port_the_docs_say(monkeypatch):
    slurm_cluster = pytest.importorskip("jax._src.clusters.slurm_cluster")
    read = {
        slurm_cluster._JOBID_PARAM,
        slurm_cluster._NODE_LIST,
        slurm_cluster._PROCESS_COUNT,
        slurm_cluster._PROCESS_ID,
        slurm_cluster._LOCAL_PROCESS_ID,
    }
    assert set(launch.SLURM_VARS) == read
    for name, value in _slurm_env(1, job_id=4096 * 1234 + 7, nodes="gpu[003-004],cpu1").items():
        monkeypatch.setenv(name, value)
    cluster = slurm_cluster.SlurmCluster
    assert cluster.is_env_present()
    # 61440 + SLURM_JOB_ID % 4096, on the first node: the loopback test picks its port so.
    assert cluster.get_coordinator_address(None, None) == "gpu003:61447"
    assert (cluster.get_process_count(), cluster.get_process_id()) == (2, 1)


def test_one_slurm_task_or_num_processes_1_is_one_process():
    assert launch.cluster_settings(_slurm_env(0, ntasks=1)) is None
    assert launch.cluster_settings({"SLURM_JOB_ID": "7"}) is None  # salloc without --ntasks
    assert launch.cluster_settings(_slurm_env(1), num_processes=1) is None


@pytest.mark.parametrize(
    "change, named",
    [
        ({"SLURM_STEP_NODELIST": None}, "without SLURM_STEP_NODELIST: start run.py with srun"),
        ({"SLURM_PROCID": None, "SLURM_LOCALID": None}, "without SLURM_PROCID, SLURM_LOCALID"),
        ({"SLURM_PROCID": "x"}, "SLURM_PROCID='x' is not an integer"),
        ({"SLURM_PROCID": "2"}, "SLURM_PROCID=2 is not below SLURM_NTASKS=2"),
        ({"SLURM_NTASKS": "two"}, "SLURM_NTASKS='two' is not an integer"),
    ],
)
def test_a_broken_slurm_environment_is_one_line(change, named):
    environ = {k: v for k, v in {**_slurm_env(0), **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=re.escape(named)) as e:
        launch.cluster_settings(environ)
    assert "\n" not in str(e.value)


def test_an_indexed_job_takes_its_index_and_the_flags():
    environ = {"JOB_COMPLETION_INDEX": "1", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert launch.cluster_settings(environ, "train-0.train:1234", 2) == (
        "kubernetes",
        {
            "coordinator_address": "train-0.train:1234",
            "num_processes": 2,
            "process_id": 1,
            "cluster_detection_method": "deactivate",
        },
    )
    # An agreeing --process_id is allowed; --num_processes=1: independent one-process runs.
    assert launch.cluster_settings(environ, "a:1", 2, 1)[1]["process_id"] == 1
    assert launch.cluster_settings(environ, num_processes=1) is None


@pytest.mark.parametrize(
    "index, flags_, named",
    [
        ("0", ("", 0), "without a process count: pass --num_processes=N"),
        ("0", ("", 2), "without a coordinator: pass --num_processes=N (the Job's completions) "
         "and --coordinator_address=JOB-0.SERVICE:PORT"),
        ("2", ("a:1", 2), "JOB_COMPLETION_INDEX=2 is not below --num_processes=2"),
        ("one", ("a:1", 2), "JOB_COMPLETION_INDEX='one' is not an integer"),
        ("0", ("a:1", 2, 1), "--process_id=1 disagrees with JOB_COMPLETION_INDEX=0"),
    ],
)  # fmt: skip
def test_a_broken_indexed_job_is_one_line(index, flags_, named):
    with pytest.raises(ConfigError, match=re.escape(named)) as e:
        launch.cluster_settings({"JOB_COMPLETION_INDEX": index}, *flags_)
    assert "\n" not in str(e.value)


def test_flags_and_jax_own_variables_keep_their_meaning():
    assert launch.cluster_settings({}) is None
    assert launch.cluster_settings({}, "10.0.0.1:1234", 4, 3) == (
        "flags",
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
    )
    assert launch.cluster_settings({"JAX_COORDINATOR_ADDRESS": "h:1"}) == ("jax", {})
    assert launch.cluster_settings({"TPU_WORKER_HOSTNAMES": "a,b"}) == ("jax", {})


def test_start_processes_turns_on_gloo_before_jax_detects_slurm(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(jax.config, "update", lambda *a: calls.append(("config", a)))
    for name, value in _slurm_env(1).items():
        monkeypatch.setenv(name, value)
    launch.start_processes("", 0, -1)
    assert calls == [
        ("config", ("jax_cpu_collectives_implementation", "gloo")),
        ("init", {"cluster_detection_method": "slurm"}),
    ]


# --- The recipes in docs/launch/, against the detection ----------------------------------------


def _parse_flags(args: list[str]):
    """The engine's own flag parser over `args`: an unknown or malformed flag fails here."""
    values = flags.FlagValues()
    settings_cli.define(values)
    values(["run.py", *args])
    return settings_cli.config_from_flags(values)


def _srun_command() -> tuple[dict, list[str]]:
    with open(SBATCH, encoding="utf-8") as f:
        text = f.read()
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    command = re.search(r"^srun (.*?)(?<!\\)$", text, re.M | re.S).group(1)
    return header, shlex.split(command.replace("\\\n", " "))


def test_the_slurm_script_starts_one_task_per_gpu_without_launch_flags():
    header, command = _srun_command()
    assert command[:2] == ["python", "run.py"]
    assert not [a for a in command if a.startswith(LAUNCH_FLAGS)]  # SLURM's variables give them
    assert header["ntasks-per-node"] == header["gpus-per-node"]  # JAX: one GPU per process
    _parse_flags(command[2:])
    with open(SBATCH, encoding="utf-8") as f:
        text = f.read()
    assert all(name in text for name in launch.SLURM_VARS)  # the comment says what is read


def _manifest() -> tuple[dict, dict, list[str]]:
    yaml = pytest.importorskip("yaml")
    with open(MANIFEST, encoding="utf-8") as f:
        docs = {d["kind"]: d for d in yaml.safe_load_all(f)}
    [container] = docs["Job"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "run.py"]
    return docs["Service"], docs["Job"], container["args"]


def test_the_kubernetes_manifest_gives_what_the_detection_needs():
    service, job, args = _manifest()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    # An indexed Job: Kubernetes sets the variable the detection reads as the process id.
    assert spec["completionMode"] == "Indexed" and "process_id" not in " ".join(args)
    assert spec["completions"] == spec["parallelism"]  # every process at once
    # Pod 0 is JOB-0.SUBDOMAIN, named by a headless Service selecting the Job's pods.
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    config = _parse_flags(args)
    host, port = config.coordinator_address.rsplit(":", 1)
    assert host == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
    assert [p["containerPort"] for p in pod["containers"][0]["ports"]] == [int(port)]
    assert config.num_processes == spec["completions"]
    assert not {e["name"] for e in pod["containers"][0].get("env", [])} & {
        launch.K8S_INDEX,
        *launch.JAX_VARS,
        *launch.SLURM_VARS,
    }  # Kubernetes sets the index; nothing else may steer the detection
    for i in range(spec["completions"]):
        environ = {launch.K8S_INDEX: str(i), "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
        name, kwargs = launch.cluster_settings(
            environ, config.coordinator_address, config.num_processes, config.process_id
        )
        assert (name, kwargs["process_id"], kwargs["num_processes"]) == ("kubernetes", i, 2)


def test_an_indexed_job_without_a_process_count_stops_with_one_line(tmp_path, data_dir):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), f"--data_dir={data_dir}",
         f"--workdir={tmp_path}/w", "--epochs=1"],
        env={**_env(1), launch.K8S_INDEX: "0"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "pass --num_processes=N" in lines[0], lines


def test_the_docs_show_the_recipes_as_they_are_tested():
    with open(os.path.join(ROOT, "docs", "gpus.md"), encoding="utf-8") as f:
        section = f.read().split("## Clusters: SLURM and Kubernetes\n")[1].split("\n## ")[0]
    blocks = re.findall(r"```(?:bash|yaml)\n(.*?)```", section, re.S)
    for path, block in zip((SBATCH, MANIFEST), blocks, strict=True):
        with open(path, encoding="utf-8") as f:
            assert block == f.read(), f"docs/gpus.md's copy of {os.path.basename(path)} differs"


# --- Two local processes per recipe, on loopback (slow) ----------------------------------------

TRAIN = [
    "--hidden_sizes=32",
    "--batch_size=32",
    "--epochs=1",
    "--test_fraction=0.8",
    "--optimizer=momentum",
    "--lr=0.05",
    "--parallel=jit",
    "--noprogress",
]
CLUSTER_VARS = re.compile(r"SLURM_|JOB_COMPLETION_INDEX|KUBERNETES_|JAX_COORDINATOR|TPU_WORKER")


def _env(devices: int) -> dict:
    """This session's environment without any cluster's variables, on `devices` CPU devices."""
    return device_env(devices, {k: v for k, v in os.environ.items() if not CLUSTER_VARS.match(k)})


def _free_port(candidates) -> int:
    for port in random.sample(candidates, len(candidates)):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _train(flags_: list[str], envs: list[dict]) -> list[tuple[str, str]]:
    """Runs run.py once per environment at the same time; their (stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "run.py"), *TRAIN, *flags_],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    try:
        outs = [p.communicate(timeout=420) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir):
    """One process on two devices: the run the two processes must reproduce."""
    workdir = str(tmp_path_factory.mktemp("single"))
    [(out, _)] = _train([f"--data_dir={data_dir}", f"--workdir={workdir}"], [_env(2)])
    assert "on 2 device(s) in 1 process(es)" in out
    return workdir


def _check_one_run(outs: list[tuple[str, str]], workdir: str, single: str) -> None:
    outs = [out for out, _ in outs]
    assert "on 2 device(s) in 2 process(es)" in outs[0]  # both joined one run
    # Only process 0 prints (gloo's own C++ connection notices are not ours to silence).
    assert [line for line in outs[1].splitlines() if not line.startswith("[Gloo]")] == []

    def params(w):
        return jax.tree.leaves(read_state(os.path.join(w, "checkpoints/latest/1/state"))["params"])

    for a, b in zip(params(single), params(workdir), strict=True):
        # The tolerance of test_engine_parallel.py's two-process test.
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.slow
def test_slurm_recipe_two_processes_on_loopback(tmp_path, data_dir, single):
    # JAX takes the port from the job id (61440 + id % 4096): a job id whose port is free.
    port = _free_port(range(61440, 65536))
    job_id = 4096 * 1234 + port - 61440
    envs = [{**_env(1), **_slurm_env(i, job_id=job_id)} for i in range(2)]
    _, command = _srun_command()
    assert not [a for a in command if a.startswith(LAUNCH_FLAGS)]
    outs = _train([f"--data_dir={data_dir}", f"--workdir={tmp_path}/w"], envs)
    _check_one_run(outs, f"{tmp_path}/w", single)


@pytest.mark.slow
def test_kubernetes_recipe_two_processes_on_loopback(tmp_path, data_dir, single):
    _, job, args = _manifest()
    # The manifest's own launch flags, its pod-0 host name replaced by loopback.
    port = _free_port(range(20000, 30000))
    launch_flags = [a for a in args if a.startswith(LAUNCH_FLAGS)]
    launch_flags = [re.sub(r"=.*:\d+$", f"=127.0.0.1:{port}", a) for a in launch_flags]
    envs = [
        {**_env(1), launch.K8S_INDEX: str(i), "KUBERNETES_SERVICE_HOST": "10.96.0.1",
         "HOSTNAME": f"{job['metadata']['name']}-{i}"}
        for i in range(job["spec"]["completions"])
    ]  # fmt: skip
    outs = _train([*launch_flags, f"--data_dir={data_dir}", f"--workdir={tmp_path}/w"], envs)
    _check_one_run(outs, f"{tmp_path}/w", single)
    # JAX's own Kubernetes detection stayed off: no API client asked for, nor warned about.
    assert not [err for _, err in outs if "Kubernetes" in err]
