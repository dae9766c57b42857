"""Drives a Consul HTTP API with py-consul, a Consul client from PyPI that nobody on this
project wrote, and checks every answer against what Consul's HTTP API documentation says.

The agent is the one CONSUL_HTTP_ADDR names (py-consul reads it itself): consul-double in
CI, a real Consul when FLOW_TEST_CONSUL_ADDR is set. So every expectation below is one a real
Consul meets: catalog and health views are polled (a real agent syncs its registrations to
the catalog asynchronously), HTTP and TCP checks point at a closed loopback port (a real agent
runs them and finds them critical; the double never runs them and leaves them critical), and
names carry a per-run suffix and are cleaned up, so a shared Consul is left as it was found.

Prints one line per step; exits 0 when every step held, 1 at the first one that did not
(with the step, what was expected and what came back), 2 when py-consul is missing.
"""

import base64
import os
import sys
import threading
import time
import traceback
import uuid

try:
    import consul
    from consul.callback import CB
    from consul.exceptions import BadRequest, ClientError
except ImportError as error:
    print(f"py-consul is not installed ({error}): python3 -m pip install py-consul", file=sys.stderr)
    sys.exit(2)

RUN = uuid.uuid4().hex[:8]
PREFIX = f"flow-py-consul-{RUN}"
SERVICE = f"flow-py-web-{RUN}"
# Nothing listens on port 1 of loopback: HTTP and TCP checks against it are critical.
CLOSED = ("127.0.0.1", 1)

client = consul.Consul()
cleanup = []


class Failed(Exception):
    """A step whose answer is not what Consul documents."""


def expect(what, actual, wanted):
    if actual != wanted:
        raise Failed(f"{what}: expected {wanted!r}, got {actual!r}")
    print(f"  ok  {what}")


def expect_true(what, condition, shown=None):
    if not condition:
        raise Failed(f"{what}: does not hold (got {shown!r})")
    print(f"  ok  {what}")


def expect_raises(what, exception, call, status=None):
    """`call` raises `exception`; with `status`, py-consul's message starts with that HTTP
    status (it raises "<status> <body>" for statuses it has no exception of its own for)."""
    try:
        result = call()
    except exception as error:
        if status is not None and not str(error).startswith(f"{status} "):
            raise Failed(f"{what}: expected HTTP {status}, got {error!r}") from error
        print(f"  ok  {what} ({type(error).__name__}: {str(error)[:100]})")
        return error
    raise Failed(f"{what}: expected {exception.__name__}, got {result!r}")


def eventually(what, probe, timeout=10.0):
    """Polls `probe` until it returns something true: for the catalog and health views, which
    a real agent updates asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            print(f"  ok  {what}")
            return value
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout}s (last: {value!r})")
        time.sleep(0.1)


def b64(text):
    return base64.b64encode(text.encode()).decode()


def kv():
    key = f"{PREFIX}/kv/a"
    expect("put a new key answers true", client.kv.put(key, "one"), True)
    index, entry = client.kv.get(key)
    expect("get returns the value", entry["Value"], b"one")
    expect("get returns the key", entry["Key"], key)
    expect_true("X-Consul-Index is at least the entry's ModifyIndex",
                int(index) >= entry["ModifyIndex"], (index, entry))
    expect_true("CreateIndex <= ModifyIndex", entry["CreateIndex"] <= entry["ModifyIndex"], entry)
    expect("a key not held by a session has LockIndex 0", entry["LockIndex"], 0)
    expect("a key not held by a session has no Session", entry.get("Session"), None)
    index, missing = client.kv.get(f"{PREFIX}/kv/missing")
    expect("get of a missing key is None (404)", missing, None)
    expect_true("a 404 still carries X-Consul-Index", int(index) > 0, index)

    client.kv.put(key, "two", flags=42)
    _, entry = client.kv.get(key)
    expect("flags are stored", entry["Flags"], 42)
    expect("a second put replaces the value", entry["Value"], b"two")

    client.kv.put(f"{PREFIX}/kv/empty", None)
    _, entry = client.kv.get(f"{PREFIX}/kv/empty")
    expect("a put without a body stores an empty value (null)", entry["Value"], None)

    client.kv.put(f"{PREFIX}/tree/x", "x")
    client.kv.put(f"{PREFIX}/tree/y/z", "z")
    client.kv.put(f"{PREFIX}/tree/y/w", "w")
    _, entries = client.kv.get(f"{PREFIX}/tree/", recurse=True)
    expect("recurse returns every key under the prefix, sorted",
           [e["Key"] for e in entries],
           [f"{PREFIX}/tree/x", f"{PREFIX}/tree/y/w", f"{PREFIX}/tree/y/z"])
    expect("recurse decodes every value", [e["Value"] for e in entries], [b"x", b"w", b"z"])
    _, keys = client.kv.get(f"{PREFIX}/tree/", keys=True)
    expect("keys lists key names", keys,
           [f"{PREFIX}/tree/x", f"{PREFIX}/tree/y/w", f"{PREFIX}/tree/y/z"])
    _, keys = client.kv.get(f"{PREFIX}/tree/", keys=True, separator="/")
    expect("keys with a separator stops at it", keys, [f"{PREFIX}/tree/x", f"{PREFIX}/tree/y/"])
    _, none = client.kv.get(f"{PREFIX}/nothing/", recurse=True)
    expect("recurse over an empty prefix is None (404)", none, None)

    odd = f"{PREFIX}/kv/a key with spaces, ?&=# and ünïcode"
    expect("a key needing URL escapes is written", client.kv.put(odd, "odd"), True)
    expect("and read back under the same name", client.kv.get(odd)[1]["Key"], odd)

    expect("delete answers true", client.kv.delete(f"{PREFIX}/tree/x"), True)
    expect("the deleted key is gone", client.kv.get(f"{PREFIX}/tree/x")[1], None)
    expect("delete of a missing key answers true", client.kv.delete(f"{PREFIX}/tree/x"), True)
    expect("delete recurse answers true", client.kv.delete(f"{PREFIX}/tree/", recurse=True), True)
    expect("delete recurse removes the subtree",
           client.kv.get(f"{PREFIX}/tree/", recurse=True)[1], None)


def cas():
    key = f"{PREFIX}/cas/k"
    expect("cas=0 creates a missing key", client.kv.put(key, "v1", cas=0), True)
    expect("cas=0 refuses an existing key", client.kv.put(key, "v2", cas=0), False)
    _, entry = client.kv.get(key)
    expect("a refused cas changes nothing", entry["Value"], b"v1")
    current = entry["ModifyIndex"]
    expect("cas with a stale index is refused", client.kv.put(key, "v2", cas=current - 1), False)
    expect("cas with the current index writes", client.kv.put(key, "v2", cas=current), True)
    _, entry = client.kv.get(key)
    expect("the cas write is visible", entry["Value"], b"v2")
    expect_true("the cas write moved ModifyIndex", entry["ModifyIndex"] > current, entry)
    expect("delete with a stale cas is refused", client.kv.delete(key, cas=current), False)
    expect_true("a refused delete keeps the key", client.kv.get(key)[1] is not None)
    expect("delete with the current cas deletes", client.kv.delete(key, cas=entry["ModifyIndex"]),
           True)
    expect("the key is gone", client.kv.get(key)[1], None)


def blocking():
    key = f"{PREFIX}/block/k"
    client.kv.put(key, "before")
    index, _ = client.kv.get(key)
    started = time.monotonic()
    again, entry = client.kv.get(key, index=index, wait="1s")
    waited = time.monotonic() - started
    expect_true("a blocking read with nothing new waits about `wait`", 0.8 <= waited < 5, waited)
    expect("and answers the unchanged value", entry["Value"], b"before")
    writer = threading.Timer(0.3, lambda: client.kv.put(key, "after"))
    writer.start()
    started = time.monotonic()
    newer, entry = client.kv.get(key, index=again, wait="20s")
    waited = time.monotonic() - started
    writer.join()
    expect_true("a blocking read wakes for the write, long before `wait`", waited < 10, waited)
    expect("and answers the new value", entry["Value"], b"after")
    expect_true("with a larger index", int(newer) > int(again), (again, newer))


def txn():
    a, b = f"{PREFIX}/txn/a", f"{PREFIX}/txn/b"
    result = client.txn.put([
        {"KV": {"Verb": "set", "Key": a, "Value": b64("A")}},
        {"KV": {"Verb": "set", "Key": b, "Value": b64("B"), "Flags": 7}},
    ])
    expect("a transaction reports no errors", result["Errors"], None)
    expect("and one result per write", [r["KV"]["Key"] for r in result["Results"]], [a, b])
    written = result["Results"][0]["KV"]["ModifyIndex"]
    expect("both writes share one index", result["Results"][1]["KV"]["ModifyIndex"], written)
    expect("set wrote the value", client.kv.get(a)[1]["Value"], b"A")
    expect("set wrote the flags", client.kv.get(b)[1]["Flags"], 7)

    result = client.txn.put([
        {"KV": {"Verb": "get", "Key": a}},
        {"KV": {"Verb": "check-index", "Key": b, "Index": written}},
    ])
    expect("get in a transaction returns the value", result["Results"][0]["KV"]["Value"], b64("A"))
    expect("check-index at the current index passes", len(result["Results"]), 2)

    expect_raises("a cas at a stale index rolls the transaction back (409)", ClientError,
                  lambda: client.txn.put([
                      {"KV": {"Verb": "set", "Key": a, "Value": b64("A2")}},
                      {"KV": {"Verb": "cas", "Key": b, "Value": b64("B2"), "Index": written - 1}},
                  ]), status=409)
    expect("a rolled-back transaction wrote nothing", client.kv.get(a)[1]["Value"], b"A")
    expect_raises("check-not-exists of an existing key fails (409)", ClientError,
                  lambda: client.txn.put([{"KV": {"Verb": "check-not-exists", "Key": a}}]),
                  status=409)

    result = client.txn.put([
        {"KV": {"Verb": "cas", "Key": a, "Value": b64("A3"), "Index": written}},
        {"KV": {"Verb": "delete", "Key": b}},
        {"KV": {"Verb": "check-not-exists", "Key": f"{PREFIX}/txn/none"}},
    ])
    expect("cas, delete and check-not-exists commit together", result["Errors"], None)
    expect("the cas wrote", client.kv.get(a)[1]["Value"], b"A3")
    expect("the delete deleted", client.kv.get(b)[1], None)


def session_node():
    # The agent's own node: what a session is created on when none is named.
    probe = client.session.create(name=f"{PREFIX}-probe", lock_delay=0)
    _, info = client.session.info(probe)
    client.session.destroy(probe)
    return info["Node"]


def sessions():
    node = session_node()
    sid = client.session.create(name=f"{PREFIX}-ttl", ttl=10, behavior="delete", lock_delay=0)
    cleanup.append(lambda: client.session.destroy(sid))
    expect_true("create returns an ID", isinstance(sid, str) and len(sid) == 36, sid)
    index, info = client.session.info(sid)
    expect("info reports the name", info["Name"], f"{PREFIX}-ttl")
    expect("info reports the TTL as sent", info["TTL"], "10s")
    expect("info reports the behavior", info["Behavior"], "delete")
    expect("info reports LockDelay 0 in nanoseconds", info["LockDelay"], 0)
    expect("info reports the agent's node", info["Node"], node)
    expect_true("info carries an index", int(index) > 0, index)

    other = client.session.create(name=f"{PREFIX}-plain")
    cleanup.append(lambda: client.session.destroy(other))
    _, info = client.session.info(other)
    expect("the default LockDelay is 15s, in nanoseconds", info["LockDelay"], 15_000_000_000)
    expect("the default behavior is release", info["Behavior"], "release")
    expect("no TTL is an empty TTL", info["TTL"], "")
    expect("the default node check is serfHealth", info["NodeChecks"], ["serfHealth"])
    expect_true("the deprecated Checks is left out when serfHealth is the only check",
                "Checks" not in info, info)

    _, listed = client.session.list()
    expect_true("list shows both sessions", {sid, other} <= {s["ID"] for s in listed}, listed)
    _, on_node = client.session.node(node)
    expect_true("node lists them on the agent's node", {sid, other} <= {s["ID"] for s in on_node},
                on_node)

    renewed = client.session.renew(sid)
    expect("renew returns the session", renewed["ID"], sid)
    expect_true("renew reports a TTL of at least the one asked",
                renewed["TTL"].endswith("s") and float(renewed["TTL"][:-1]) >= 10, renewed["TTL"])
    expect_raises("renew of an unknown session is 404", consul.NotFound,
                  lambda: client.session.renew(str(uuid.uuid4())))

    expect("destroy answers true", client.session.destroy(other), True)
    expect("a destroyed session has no info", client.session.info(other)[1], None)
    expect("destroy of an unknown session still answers true",
           client.session.destroy(str(uuid.uuid4())), True)
    _, listed = client.session.list()
    expect_true("list no longer shows it", other not in {s["ID"] for s in listed}, listed)

    # Consul checks these in the server's Session.Apply, whose errors reach clients as 500s.
    expect_raises("a TTL below 10s is refused", consul.ConsulException,
                  lambda: client.http.put(CB.json(), "/v1/session/create",
                                          data='{"TTL": "5s"}'))
    expect_raises("an unknown behavior is refused", consul.ConsulException,
                  lambda: client.http.put(CB.json(), "/v1/session/create",
                                          data='{"Behavior": "explode"}'))
    expect_raises("a session on a node that is not registered is refused", consul.ConsulException,
                  lambda: client.session.create(node=f"{PREFIX}-no-such-node"))
    expect_raises("a session in another datacenter is refused", consul.ConsulException,
                  lambda: client.session.create(dc=f"{PREFIX}-dc"))


def locks():
    key = f"{PREFIX}/lock/leader"
    first = client.session.create(name=f"{PREFIX}-a", lock_delay=2)
    second = client.session.create(name=f"{PREFIX}-b", lock_delay=0)
    cleanup.append(lambda: client.session.destroy(first))
    cleanup.append(lambda: client.session.destroy(second))
    expect("LockDelay given in seconds is kept, in nanoseconds",
           client.session.info(first)[1]["LockDelay"], 2_000_000_000)

    expect("a free key is acquired", client.kv.put(key, "a", acquire=first), True)
    _, entry = client.kv.get(key)
    expect("the key names its session", entry["Session"], first)
    expect("the first acquire sets LockIndex 1", entry["LockIndex"], 1)
    expect("the value is written by the acquire", entry["Value"], b"a")
    expect("a held key is refused to another session", client.kv.put(key, "b", acquire=second),
           False)
    expect("the holder may acquire again (updates the value)",
           client.kv.put(key, "a2", acquire=first), True)
    expect("re-acquiring keeps LockIndex", client.kv.get(key)[1]["LockIndex"], 1)
    expect("release by another session is refused", client.kv.put(key, "x", release=second),
           False)
    expect("release by the holder succeeds", client.kv.put(key, "a3", release=first), True)
    _, entry = client.kv.get(key)
    expect("a released key has no Session", entry.get("Session"), None)
    expect("release writes the value", entry["Value"], b"a3")
    expect("release does not start a lock-delay",
           client.kv.put(key, "b", acquire=second), True)
    expect("a new holder increments LockIndex", client.kv.get(key)[1]["LockIndex"], 2)
    expect("released", client.kv.put(key, "b", release=second), True)

    expect("the first session acquires again", client.kv.put(key, "a", acquire=first), True)
    client.session.destroy(first)
    _, entry = client.kv.get(key)
    expect("destroying the holder releases its key (behavior release)", entry.get("Session"),
           None)
    expect_true("and keeps the key", entry is not None)
    expect("during the holder's lock-delay no session acquires the key",
           client.kv.put(key, "b", acquire=second), False)
    time.sleep(2.5)
    expect("after the lock-delay the key can be acquired",
           client.kv.put(key, "b", acquire=second), True)
    client.kv.put(key, "b", release=second)

    ephemeral = client.session.create(name=f"{PREFIX}-eph", behavior="delete", lock_delay=0)
    cleanup.append(lambda: client.session.destroy(ephemeral))
    eph_key = f"{PREFIX}/lock/ephemeral"
    expect("an ephemeral key is acquired", client.kv.put(eph_key, "e", acquire=ephemeral), True)
    client.session.destroy(ephemeral)
    expect("destroying a behavior=delete session deletes its keys",
           client.kv.get(eph_key)[1], None)
    expect_raises("acquiring with an unknown session is refused", consul.ConsulException,
                  lambda: client.kv.put(key, "x", acquire=str(uuid.uuid4())))


def cluster():
    leader = client.status.leader()
    expect_true("status/leader names the leader's address", ":" in leader, leader)
    expect_true("status/peers includes the leader", leader in client.status.peers(),
                client.status.peers())
    expect_true("catalog/datacenters lists the agent's datacenter",
                client.catalog.datacenters() and all(isinstance(dc, str)
                                                     for dc in client.catalog.datacenters()),
                client.catalog.datacenters())


def health_ids(**query):
    _, nodes = client.health.service(SERVICE, **query)
    return sorted(n["Service"]["ID"] for n in nodes)


def services():
    one, two = f"{SERVICE}-1", f"{SERVICE}-2"
    register = client.agent.service.register
    expect("registration with TTL, HTTP and TCP checks answers true", register(
        SERVICE, service_id=one, address="127.0.0.1", port=18081, tags=["blue", "v1"],
        meta={"version": "1"}, check=consul.Check.ttl("30s"),
        extra_checks=[consul.Check.http(f"http://{CLOSED[0]}:{CLOSED[1]}/health", "10s",
                                        timeout="1s"),
                      consul.Check.tcp(CLOSED[0], CLOSED[1], "10s", timeout="1s")]), True)
    cleanup.append(lambda: client.agent.service.deregister(one))
    expect("registration with a single TTL check answers true", register(
        SERVICE, service_id=two, address="127.0.0.1", port=18082, tags=["green", "v1"],
        check=consul.Check.ttl("30s")), True)
    cleanup.append(lambda: client.agent.service.deregister(two))

    listed = client.agent.services()
    expect_true("the agent lists both", {one, two} <= set(listed), sorted(listed))
    expect("the agent keeps the tags", listed[one]["Tags"], ["blue", "v1"])
    expect("the agent keeps the port", listed[one]["Port"], 18081)
    expect("the agent keeps the meta", listed[one]["Meta"], {"version": "1"})
    definition = client.agent.service_definition(one)
    expect("the service definition names the service", definition["Service"], SERVICE)
    expect("and its address", definition["Address"], "127.0.0.1")

    checks = client.agent.checks()
    ttl, http, tcp = f"service:{one}:1", f"service:{one}:2", f"service:{one}:3"
    expect_true("several checks are numbered service:<id>:<n>",
                {ttl, http, tcp, f"service:{two}"} <= set(checks), sorted(checks))
    expect("their types", [checks[c]["Type"] for c in (ttl, http, tcp)], ["ttl", "http", "tcp"])
    expect("a TTL check starts critical", checks[f"service:{two}"]["Status"], "critical")
    expect("each check names its service", checks[tcp]["ServiceID"], one)

    expect("check/pass answers true", client.agent.check.ttl_pass(f"service:{two}", "all good"),
           True)
    checks = client.agent.checks()
    expect("the check is passing", checks[f"service:{two}"]["Status"], "passing")
    expect("with the note as its output", checks[f"service:{two}"]["Output"], "all good")
    expect("passing the TTL check of the first instance", client.agent.check.ttl_pass(ttl), True)
    expect("the HTTP check (closed port) is critical", client.agent.checks()[http]["Status"],
           "critical")
    expect_raises("check/pass of a check without TTL is refused (500)", consul.ConsulException,
                  lambda: client.agent.check.ttl_pass(http), status=500)
    expect("check/pass of an unknown check is 404", client.agent.check.ttl_pass(
        f"service:{SERVICE}-none"), False)

    eventually("health lists both instances", lambda: health_ids() == [one, two])
    eventually("?passing lists only the instance whose checks all pass",
               lambda: health_ids(passing=True) == [two])
    eventually("?tag filters by tag", lambda: health_ids(tag="blue") == [one])
    eventually("repeated ?tag needs every tag", lambda: health_ids(tag=["v1", "green"]) == [two])
    eventually("?tag with ?passing", lambda: health_ids(tag="blue", passing=True) == [])
    _, nodes = client.health.service(SERVICE, tag="green")
    statuses = {c["CheckID"]: c["Status"] for c in nodes[0]["Checks"]}
    expect("a health entry carries the node's serfHealth", statuses.get("serfHealth"), "passing")
    expect("and the service's checks", statuses.get(f"service:{two}"), "passing")
    expect("the health entry's service keeps its port", nodes[0]["Service"]["Port"], 18082)

    expect("check/warn answers true", client.agent.check.ttl_warn(f"service:{two}", "slow"), True)
    expect("the check is warning", client.agent.checks()[f"service:{two}"]["Status"], "warning")
    eventually("?passing leaves out a warning instance", lambda: health_ids(passing=True) == [])
    expect("check/fail answers true", client.agent.check.ttl_fail(f"service:{two}", "down"), True)
    checks = client.agent.checks()
    expect("the check is critical", checks[f"service:{two}"]["Status"], "critical")
    expect("with the note as its output", checks[f"service:{two}"]["Output"], "down")
    client.agent.check.ttl_pass(f"service:{two}")
    eventually("passing again", lambda: health_ids(passing=True) == [two])

    index, _ = client.health.service(SERVICE)
    third = f"{SERVICE}-3"
    writer = threading.Timer(0.3, lambda: register(SERVICE, service_id=third, port=18084))
    writer.start()
    cleanup.append(lambda: client.agent.service.deregister(third))
    started = time.monotonic()
    deadline = started + 10
    nodes = []
    # A blocking health read wakes when the service's instances change (Consul may also wake
    # it for other changes, which clients must expect: read again with the new index).
    while time.monotonic() < deadline:
        index, nodes = client.health.service(SERVICE, index=index, wait="5s")
        if third in {n["Service"]["ID"] for n in nodes}:
            break
    writer.join()
    expect_true("a blocking health read wakes for a new instance, long before `wait`",
                third in {n["Service"]["ID"] for n in nodes}
                and time.monotonic() - started < 4, nodes)
    client.agent.service.deregister(third)
    eventually("and the instance is gone again", lambda: third not in health_ids())

    eventually("the catalog lists the service with its tags", lambda: set(
        client.catalog.services()[1].get(SERVICE, [])) == {"blue", "green", "v1"})
    _, entries = client.catalog.service(SERVICE, tag="green")
    expect("the catalog filters by tag", [e["ServiceID"] for e in entries], [two])
    expect("the catalog entry's port", entries[0]["ServicePort"], 18082)
    expect("an unknown service has no catalog entries",
           client.catalog.service(f"{SERVICE}-none")[1], [])

    expect("re-registering with replace-existing-checks answers true", register(
        SERVICE, service_id=one, address="127.0.0.1", port=18081, tags=["blue", "v1"],
        check=consul.Check.ttl("30s"), replace_existing_checks=True), True)
    checks = client.agent.checks()
    expect_true("the checks left out are removed",
                http not in checks and tcp not in checks, sorted(checks))
    expect_true("the one sent is kept, under the single-check ID",
                f"service:{one}" in checks, sorted(checks))

    weighted = f"{SERVICE}-weighted"
    expect("registration with weights answers true", register(
        weighted, weights={"Passing": 10, "Warning": 2}), True)
    cleanup.append(lambda: client.agent.service.deregister(weighted))
    expect("the agent keeps the weights", client.agent.services()[weighted]["Weights"],
           {"Passing": 10, "Warning": 2})
    expect("without weights the agent reports Consul's default",
           client.agent.services()[two]["Weights"], {"Passing": 1, "Warning": 1})
    eventually("an instance without checks is passing", lambda: [
        n["Service"]["ID"] for n in client.health.service(weighted, passing=True)[1]] == [weighted])
    expect_raises("weights with Passing 0 are refused (400)", BadRequest,
                  lambda: register(f"{SERVICE}-bad", weights={"Passing": 0, "Warning": 1}))
    expect_raises("meta with a reserved key is refused (400)", BadRequest,
                  lambda: register(f"{SERVICE}-bad", meta={"consul-version": "1"}))
    expect_raises("meta with an invalid key is refused (400)", BadRequest,
                  lambda: register(f"{SERVICE}-bad", meta={"bad key": "1"}))
    expect_raises("the address 0.0.0.0 is refused (400)", BadRequest,
                  lambda: register(f"{SERVICE}-bad", address="0.0.0.0"))
    expect_raises("a service without a name is refused (400)", BadRequest,
                  lambda: register(""))
    expect_raises("an HTTP check without an interval is refused (400)", BadRequest,
                  lambda: register(f"{SERVICE}-bad", check={"http": "http://127.0.0.1:1/"}))
    expect_raises("a TTL check with an interval too is refused (400)", BadRequest,
                  lambda: register(f"{SERVICE}-bad", check={"ttl": "10s", "interval": "10s"}))
    expect_true("nothing was registered by refused requests",
                f"{SERVICE}-bad" not in client.agent.services())

    expect("deregister answers true", client.agent.service.deregister(two), True)
    expect_true("the agent no longer lists it", two not in client.agent.services())
    expect_true("its check is gone", f"service:{two}" not in client.agent.checks())
    eventually("health no longer lists it", lambda: health_ids() == [one])
    expect("deregister of an unknown service is 404", client.agent.service.deregister(two),
           False)


def ttl_checks_and_sessions():
    """A TTL check not reported within its TTL turns critical, and a session tied to a check
    is invalidated when the check does."""
    service = f"{SERVICE}-ttl"
    check = f"service:{service}"
    client.agent.service.register(service, check=consul.Check.ttl("1s"))
    cleanup.append(lambda: client.agent.service.deregister(service))
    client.agent.check.ttl_pass(check, "alive")
    expect("a reported TTL check is passing", client.agent.checks()[check]["Status"], "passing")
    eventually("a TTL check not reported within its TTL turns critical",
               lambda: client.agent.checks()[check]["Status"] == "critical", timeout=5)
    expect_true("with output saying so", "TTL expired" in client.agent.checks()[check]["Output"],
                client.agent.checks()[check]["Output"])

    def refused_for_critical_check():
        # The agent hands the new status to the catalog asynchronously: until then a real
        # Consul still creates the session, which is destroyed again.
        try:
            created = client.session.create(checks=["serfHealth", check], lock_delay=0)
        except consul.ConsulException as error:
            return str(error).startswith("500 ")
        client.session.destroy(created)
        return False
    eventually("a session tied to a critical check is refused (500)", refused_for_critical_check)
    long = f"{SERVICE}-long"
    long_check = f"service:{long}"
    client.agent.service.register(long, check=consul.Check.ttl("60s"))
    cleanup.append(lambda: client.agent.service.deregister(long))
    client.agent.check.ttl_pass(long_check)
    # The session is created against the catalog, which a real agent updates asynchronously.
    def create_tied():
        try:
            return client.session.create(checks=["serfHealth", long_check], lock_delay=0)
        except consul.ConsulException:
            return None
    tied = eventually("a session tied to a passing check is created", create_tied)
    cleanup.append(lambda: client.session.destroy(tied))
    _, info = client.session.info(tied)
    # Consul 1.7+ may report checks sent as the deprecated `Checks` under `NodeChecks`.
    listed = (info.get("Checks") or []) + (info.get("NodeChecks") or [])
    expect_true("it lists the check", long_check in listed, info)
    key = f"{PREFIX}/tied/lock"
    expect("it acquires a key", client.kv.put(key, "held", acquire=tied), True)
    client.agent.check.ttl_fail(long_check, "gone")
    eventually("the check turning critical invalidates the session",
               lambda: client.session.info(tied)[1] is None)
    expect("and releases its key", client.kv.get(key)[1].get("Session"), None)


def agent_checks_and_health_views():
    """Checks registered on their own, of a service or of the node, and the health views
    of checks: by service, by state and by node."""
    service = f"{SERVICE}-own-checks"
    client.agent.service.register(service, port=18083)
    cleanup.append(lambda: client.agent.service.deregister(service))
    check = f"{PREFIX}-svc-ttl"
    expect("a check registered for a service answers true", client.agent.check.register(
        "own ttl", check=consul.Check.ttl("30s"), check_id=check, service_id=service), True)
    cleanup.append(lambda: client.agent.check.deregister(check))
    checks = client.agent.checks()
    expect_true("the agent lists it under its ID", check in checks, sorted(checks))
    expect("it names its service", checks[check]["ServiceName"], service)
    expect("and keeps its name", checks[check]["Name"], "own ttl")
    named = f"{PREFIX}-named-only"
    expect("a check without an ID", client.agent.check.register(
        named, check=consul.Check.ttl("30s"), service_id=service), True)
    cleanup.append(lambda: client.agent.check.deregister(named))
    expect_true("is registered under its name", named in client.agent.checks())
    expect_raises("a check without a name is refused (400)", BadRequest,
                  lambda: client.agent.check.register("", check=consul.Check.ttl("30s")))
    expect_raises("a check of an unknown service is refused", consul.ConsulException,
                  lambda: client.agent.check.register(
                      f"{PREFIX}-orphan", check=consul.Check.ttl("30s"),
                      service_id=f"{SERVICE}-none"))

    client.agent.check.ttl_pass(check)
    client.agent.check.ttl_warn(named)
    eventually("health/checks lists the service's checks", lambda: sorted(
        c["CheckID"] for c in client.health.checks(service)[1]) == sorted([check, named]))
    eventually("health/state/warning lists the warning one", lambda: named in {
        c["CheckID"] for c in client.health.state("warning")[1]})
    _, passing = client.health.state("passing")
    expect_true("health/state/passing lists the passing one and not the warning one",
                check in {c["CheckID"] for c in passing}
                and named not in {c["CheckID"] for c in passing}, passing)
    expect_true("health/state/passing lists serfHealth",
                "serfHealth" in {c["CheckID"] for c in passing}, passing)
    expect_true("every check health/state/any lists",
                {check, named, "serfHealth"} <= {c["CheckID"] for c in client.health.state("any")[1]})
    node = session_node()
    _, on_node = client.health.node(node)
    expect_true("health/node lists the node's checks",
                {check, "serfHealth"} <= {c["CheckID"] for c in on_node}, on_node)
    expect("?passing leaves out an instance with a warning check",
           [n["Service"]["ID"] for n in client.health.service(service, passing=True)[1]], [])

    expect("deregistering a check answers true", client.agent.check.deregister(named), True)
    expect_true("the agent no longer lists it", named not in client.agent.checks())
    eventually("without it the instance is passing", lambda: [
        n["Service"]["ID"] for n in client.health.service(service, passing=True)[1]] == [service])
    expect("deregistering an unknown check is 404", client.agent.check.deregister(named), False)


def clean():
    for step in reversed(cleanup):
        try:
            step()
        except Exception:  # noqa: BLE001 -- cleanup of what may already be gone
            pass
    client.kv.delete(f"{PREFIX}/", recurse=True)


def main():
    print(f"py-consul {getattr(consul, '__version__', '?')} against "
          f"{os.environ.get('CONSUL_HTTP_ADDR', 'http://127.0.0.1:8500')}")
    failed = False
    try:
        for area in (cluster, kv, cas, blocking, txn, sessions, locks, services,
                     ttl_checks_and_sessions,
                     agent_checks_and_health_views):
            print(f"{area.__name__}:")
            area()
    except Failed as failure:
        print(f"FAILED {failure}")
        failed = True
    except Exception:  # noqa: BLE001 -- an unexpected answer is a failure too
        print("FAILED with an exception:")
        traceback.print_exc(file=sys.stdout)
        failed = True
    finally:
        clean()
    print("FAILED" if failed else "all steps held")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
