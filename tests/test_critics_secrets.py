"""The critic API key lives in the environment only: never in a run directory, the logs or the output."""

import logging

from critique_rl.critics.stub_server import StubServer

KEY = "sk-critique-rl-test-7f3a9c1e5b2d4f60-DO-NOT-LOG"


def test_api_key_never_reaches_the_run_directory(train_short, monkeypatch, capfd, caplog):
    monkeypatch.setenv("CRITIC_SECRET_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    # Some faults on the way, so error paths (retries, a fallback with its message) are exercised too.
    with StubServer(faults=["500", "400", "empty"]) as server:
        run_dir = train_short("critic.backend=openai", f"critic.base_url={server.base_url}", "critic.model=stub",
                              "critic.api_key_env=CRITIC_SECRET_KEY", "critic.backoff_s=0.01")
    assert server.authorizations and set(server.authorizations) == {f"Bearer {KEY}"}   # the key was used
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert (run_dir / "critic_cache.sqlite") in files and (run_dir / "config.yaml") in files
    assert "CRITIC_SECRET_KEY" in (run_dir / "config.yaml").read_text()               # the variable's name only
    leaking = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert leaking == []
    out, err = capfd.readouterr()
    assert KEY not in out + err + caplog.text
