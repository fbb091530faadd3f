"""The parameter server over storage: checkpoints, resuming, restarts that keep the start."""

import numpy as np
from conftest import retrain_config

from lrstream.data.store import Store
from lrstream.distributed.plan import plan_data
from lrstream.distributed.retrain import build_loop
from lrstream.distributed.roles import ParameterServer


def _started(store, cfg, run_id):
    loop, _ = build_loop(store, "cam", cfg, plan_data(store, "cam", cfg.workers), use_ray=False, run_id=run_id)
    loop.wait_ready()
    loop.begin()
    return loop


def test_a_new_parameter_server_resumes_exactly_from_its_checkpoint(store):
    cfg = retrain_config(2)
    straight = _started(store, cfg, "straight")
    straight.run()
    interrupted = _started(store, cfg, "crash")
    for _ in range(13):
        interrupted.step()
    resumed = _started(store, cfg, "crash")  # a fresh server, as after a crash
    assert resumed.version == 10  # the newest checkpoint (every 5 steps; validation at 10 checkpoints too)
    resumed.run()
    a, b = straight.result(True), resumed.result(True)
    np.testing.assert_array_equal(a["params"], b["params"])
    assert a["info"]["val_curve"] == b["info"]["val_curve"]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    lc, root = retrain_config(1).learn, Store(str(tmp_path))
    ps = ParameterServer(lc, np.zeros(40), root, f"{root.base}/run", checkpoint_every=1)
    grad = {"step": 1, "loss_sum": 1.0, "grad_sum": np.ones(40), "count": 1}
    ps.apply(grad)
    ps.apply({**grad, "step": 2})
    (tmp_path / "run" / "step=00000002" / "params.npy").write_bytes(b"garbage")
    again = ParameterServer(lc, np.zeros(40), root, f"{root.base}/run")
    assert again.restored_from == 1 and again.version == 1


def test_a_restarted_server_resumes_from_its_checkpoint_not_from_the_start_it_is_given(tmp_path):
    # Ray constructs a crashed server again with its original arguments, start parameters included.
    lc, root = retrain_config(1).learn, Store(str(tmp_path))
    start = np.arange(12, dtype=np.float64)
    ps = ParameterServer(lc, start, root, f"{root.base}/run", checkpoint_every=1)
    assert np.array_equal(ps.params(), start) and ps.restored_from is None
    ps.apply({"step": 1, "loss_sum": 1.0, "grad_sum": np.ones(12), "count": 1})
    again = ParameterServer(lc, start, root, f"{root.base}/run", checkpoint_every=1)
    assert again.restored_from == 1 and np.array_equal(again.params(), ps.params()) and not np.array_equal(again.params(), start)


def test_a_worker_failure_passes_through_the_server_as_data(tmp_path):
    ps = ParameterServer(retrain_config(1).learn, np.zeros(4))
    failure = {"ok": False, "exit_code": 3, "error": "bad frame", "type": "DataError"}
    assert ps.apply({"step": 1, "loss_sum": 0.0, "grad_sum": np.zeros(4), "count": 1}, failure) is failure
    assert ps.push(failure, 0) is failure and ps.record_val(0, failure) is failure and ps.version == 0
