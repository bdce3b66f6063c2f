"""``user``, ``role`` and ``auth`` command flows: the real etcdctl against the target, and fastkvctl against a
real etcd, both held to what etcdctl 3.4.23 prints against etcd 3.4.23 (the literals below were observed
there; the first test also re-checks them on the reference etcd every run).

The steps that prompt for a password feed it on stdin; etcdctl then also prints ``stty`` complaints on
stderr (its stdin is not a terminal), which are removed before the comparison (fastkvctl prints none).  Every flow ends with auth disabled and its users and roles removed, also on
failure (the ``env`` fixture of test_auth.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conformance.conftest import Api, Target
from tests.conformance.test_auth import ROOT_PW, TAG, AuthEnv
from tests.support.procs import have_etcd, start_server

pytestmark = [pytest.mark.etcd, pytest.mark.auth_api]

CTL_TIMEOUT = 20.0
STTY_NOISE = re.compile(r"^stty: .*\n", re.M)  # etcdctl prompting with a stdin that is not a terminal


@pytest.fixture(scope="module")
def reference(target: Target) -> Iterator[Target]:
    if not have_etcd():
        pytest.skip("etcd/etcdctl not installed")
    if target.kind == "etcd":
        yield target
        return
    server = start_server("etcd")
    try:
        yield Target("etcd", server.url, server)
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["ETCDCTL_API"] = "2"
    return env


def run_ctl(tool: str, url: str, args: list[str], stdin: str, pinned: bool) -> tuple[int, str, str]:
    argv = ["etcdctl"] if tool == "etcdctl" else [sys.executable, "-m", "fastkv.cli.main"]
    argv += ["--endpoints", url, *(["--no-sync"] if pinned else []), *args]
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=_env(), timeout=CTL_TIMEOUT)
    return p.returncode, p.stdout, p.stderr


Step = tuple[list[str], str, int, str, str]


def flow(p: str) -> list[Step]:
    """(args, stdin, exit code, stdout, stderr) for one full user/role/auth session under key prefix ``p``."""
    carol, dave, ghost, r1 = f"carol{TAG}", f"dave{TAG}", f"ghost{TAG}", f"r{TAG}"
    root = ["-u", f"root:{ROOT_PW}"]
    return [
        (["user", "list"], "", 0, "", ""),
        (["auth", "enable"], "", 1, "", "auth: No root user available, please create one\n"),
        (["auth", "disable"], "", 1, "", "auth: already disabled\n"),
        (["user", "add", f"root:{ROOT_PW}"], "", 0, "User root created\n", ""),
        (["user", "add", f"{carol}:pw"], "", 0, f"User {carol} created\n", ""),
        (["user", "add", f"{carol}:pw"], "", 0, f"User {carol} created\n", ""),
        (
            ["user", "add", f"{carol}:"],
            "",
            1,
            "",
            "auth: User not updated. Use grant/revoke/password to update the user.\n",
        ),
        (["user", "add"], "", 1, "", "Please provide a username\n"),
        (["user", "get", carol], "", 0, f"User: {carol}\nRoles: \n", ""),
        (["user", "get", f"nobody{TAG}"], "", 1, "", f"auth: User nobody{TAG} does not exist.\n"),
        (["user", "get"], "", 1, "", "Please provide a username\n"),
        (["role", "add", r1], "", 0, f"Role {r1} created\n", ""),
        (["role", "add", r1], "", 1, "", f"Role {r1} already exists\n"),
        (["role", "add"], "", 1, "", "Please provide a role name\n"),
        (["role", "grant", r1], "", 1, "", "No path specified; please use `--path`\n"),
        (
            ["role", "grant", "--path", f"{p}/*", r1],
            "",
            1,
            "",
            "Please specify exactly one of --read, --write or --readwrite\n",
        ),
        (
            ["role", "grant", "--path", f"{p}/*", "--read", "--write", r1],
            "",
            1,
            "",
            "Please specify exactly one of --read, --write or --readwrite\n",
        ),
        (
            ["role", "grant", "--path", "a//b", "--read", r1],
            "",
            1,
            "",
            "Not canonical path; please use `--path=/a/b`\n",
        ),
        (["role", "grant", "--path", f"{p}/*", "--read"], "", 1, "", "Please provide a role name\n"),
        (["role", "grant", "--path", f"{p}/*", "--read", r1], "", 0, f"Role {r1} updated\n", ""),
        (
            ["role", "grant", "--path", f"{p}/*", "--rw", r1],
            "",
            1,
            "",
            f"auth: Granting duplicate read permission {p}/*\n",
        ),
        (["role", "grant", "--path", f"{p}/w", "--write", r1], "", 0, f"Role {r1} updated\n", ""),
        (["role", "get", r1], "", 0, f"Role: {r1}\nKV Read:\n\t{p}/*\nKV Write:\n\t{p}/w\n", ""),
        (["role", "get", "root"], "", 0, "Role: root\nKV Read:\n\t/*\nKV Write:\n\t/*\n", ""),
        (["role", "get", f"nobody{TAG}"], "", 1, "", f"auth: Role nobody{TAG} does not exist.\n"),
        (
            ["role", "revoke", "--path", "/zz", "--write", r1],
            "",
            1,
            "",
            "auth: Role not updated. Use grant/revoke to update the role.\n",
        ),
        (["role", "revoke", "--path", f"{p}/w", "--write", r1], "", 0, f"Role {r1} updated\n", ""),
        (
            ["role", "grant", "--path", "/x", "--read", f"nobody{TAG}"],
            "",
            1,
            "",
            f"auth: Role nobody{TAG} does not exist.\n",
        ),
        (["role", "list"], "", 0, f"{r1}\nroot\n", ""),
        (["role", "list", "x"], "", 1, "", "No arguments accepted\n"),
        (["user", "grant", carol], "", 1, "", "No roles specified; please use `--roles`\n"),
        (["user", "grant", "--roles", r1, carol], "", 0, f"User {carol} updated\n", ""),
        (
            ["user", "grant", "--roles", r1, carol],
            "",
            1,
            "",
            f"auth: Granting duplicate role {r1} for user {carol}\n",
        ),
        (
            ["user", "grant", "--roles", r1, f"nobody{TAG}"],
            "",
            1,
            "",
            f"auth: User nobody{TAG} does not exist.\n",
        ),
        (["user", "get", carol], "", 0, f"User: {carol}\nRoles:  {r1}\n", ""),
        (
            ["user", "revoke", "--roles", "nope", carol],
            "",
            1,
            "",
            f"auth: Revoking ungranted role nope for user {carol}\n",
        ),
        (["user", "list"], "", 0, f"{carol}\nroot\n", ""),
        (["user", "list", "x"], "", 1, "", "No arguments accepted\n"),
        (["auth", "enable"], "", 0, "Authentication Enabled\n", ""),
        (["auth", "enable"], "", 1, "", "Insufficient credentials\n"),
        ([*root, "auth", "enable"], "", 1, "", "auth: already enabled\n"),
        (["user", "list"], "", 1, "", "Insufficient credentials\n"),
        (["-u", "root:bad", "user", "list"], "", 1, "", "Insufficient credentials\n"),
        ([*root, "user", "list"], "", 0, f"{carol}\nroot\n", ""),
        (["-u", "root", "user", "list"], f"{ROOT_PW}\n", 0, f"Password: \n{carol}\nroot\n", ""),
        # The guest role (made by enable) may still write; carol's role may only read under p.
        (["set", f"{p}/k", "v"], "", 0, "v\n", ""),
        (
            ["-u", f"{carol}:pw", "set", f"{p}/k", "v2"],
            "",
            4,
            "",
            "Error:  110: The request requires user authentication (Insufficient credentials) [0]\n",
        ),
        (["-u", f"{carol}:pw", "get", f"{p}/k"], "", 0, "v\n", ""),
        (
            ["-u", f"{carol}:bad", "get", f"{p}/k"],
            "",
            4,
            "",
            "Error:  110: The request requires user authentication (Insufficient credentials) [0]\n",
        ),
        ([*root, "user", "passwd", carol], "pw2\n", 0, "New password: \nPassword updated\n", ""),
        # etcdctl's passwd goes on for a missing user: the PUT creates it (201) and the command fails
        # with an empty message; without a password the create is refused.
        (
            [*root, "user", "passwd", ghost],
            "\n",
            1,
            "New password: \n",
            f"auth: Cannot create user {ghost} with an empty password\n",
        ),
        ([*root, "user", "passwd", ghost], "pw\n", 1, "New password: \n", "\n"),
        ([*root, "user", "get", ghost], "", 0, f"User: {ghost}\nRoles: \n", ""),
        ([*root, "user", "remove", ghost], "", 0, f"User {ghost} removed\n", ""),
        (["-u", f"{carol}:pw2", "get", f"{p}/k"], "", 0, "v\n", ""),
        (
            [*root, "user", "remove", "root"],
            "",
            1,
            "",
            "auth: Cannot delete root user while auth is enabled.\n",
        ),
        ([*root, "role", "remove", r1], "", 0, f"Role {r1} removed\n", ""),
        ([*root, "role", "remove", r1], "", 1, "", f"auth: Role {r1} doesn't exist.\n"),
        ([*root, "role", "remove", "root"], "", 1, "", "auth: Cannot modify role root: is root role.\n"),
        ([*root, "user", "remove", carol], "", 0, f"User {carol} removed\n", ""),
        ([*root, "user", "remove", carol], "", 1, "", f"auth: User {carol} does not exist\n"),
        ([*root, "auth", "disable"], "", 0, "Authentication Disabled\n", ""),
        (["user", "add", dave], "pw\n", 0, f"New password: \nUser {dave} created\n", ""),
        (["user", "remove", dave], "", 0, f"User {dave} removed\n", ""),
        (["role", "remove", "guest"], "", 0, "Role guest removed\n", ""),
        (["user", "remove", "root"], "", 0, "User root removed\n", ""),
        (["rm", "--recursive", p], "", 0, "", ""),
    ]


def _play(tool: str, url: str, steps: list[Step], pinned: bool) -> None:
    for args, stdin, code, out, err in steps:
        rc, got_out, got_err = run_ctl(tool, url, args, stdin, pinned)
        if tool == "etcdctl" and stdin:
            got_err = STTY_NOISE.sub("", got_err)
        assert (rc, got_out, got_err) == (code, out, err), (tool, args)


@pytest.fixture
def env(api: Api) -> Iterator[AuthEnv]:
    e = AuthEnv(api)
    e.users += [f"carol{TAG}", f"dave{TAG}", f"ghost{TAG}"]
    e.roles += [f"r{TAG}"]
    e.cleanup()
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture
def ref_env(reference: Target) -> Iterator[AuthEnv]:
    e = AuthEnv(Api(reference))
    e.users += [f"carol{TAG}", f"dave{TAG}", f"ghost{TAG}"]
    e.roles += [f"r{TAG}"]
    e.cleanup()
    try:
        yield e
    finally:
        e.cleanup()


def test_etcdctl_auth_flow_on_target(target: Target, env: AuthEnv, prefix: str) -> None:
    _play("etcdctl", target.url, flow(prefix + "/ctl"), pinned=target.cluster_size != 1)


def test_fastkvctl_auth_flow_matches_etcdctl_on_etcd(
    reference: Target, ref_env: AuthEnv, prefix: str
) -> None:
    _play("fastkvctl", reference.url, flow(prefix + "/fctl"), pinned=False)


def test_etcdctl_auth_flow_on_reference(
    target: Target, reference: Target, ref_env: AuthEnv, prefix: str
) -> None:
    """The literals above, re-checked on a real etcd (the first test does it when the target is etcd)."""
    if reference is target:
        pytest.skip("the target is the reference etcd: checked by test_etcdctl_auth_flow_on_target")
    _play("etcdctl", reference.url, flow(prefix + "/rctl"), pinned=False)
