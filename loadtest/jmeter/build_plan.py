"""Writes loadtest/jmeter/eventflow.jmx, the JMeter plan, from one readable description.

A JMX file is XML that nobody reviews by eye; this script is the source, the .jmx is committed beside it so
JMeter (or its GUI) opens it directly. The plan uses only elements JMeter 2.13 has (Debian's package: see
docs/performance.md for why that one): regex extractors, response assertions, a synchronizing timer, a
constant throughput timer, and __P properties for everything `run.py` prepares (host, tokens, event ids).
Regenerate with `python -m loadtest.jmeter.build_plan`.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

PLAN = Path(__file__).with_name("eventflow.jmx")
CARD = '{"numero_tarjeta":"4242424242424242","vencimiento":"12/34","cvc":"123"}'
PASSWORD = "una clave larga para medir velocidad"
REGISTRO = (
    '{"tipo_documento":"Pasaporte","nro_documento":"J${__Random(10000000,99999999,doc)}",'
    '"nombre":"Visitante","apellido":"Prueba","email":"jm.${__RandomString(14,abcdefghijkmnpqrstuvwxyz23456789,tag)}'
    f'@ejemplo.com","password":"{PASSWORD}"}}'
)
LOGIN = f'{{"email":"jm.${{tag}}@ejemplo.com","password":"{PASSWORD}"}}'
EVENTO = (
    '{"nombre":"JMeter ${__threadNum}-${__Random(1,999999)}","descripcion":"prueba de carga",'
    '"fecha":"2031-01-01T21:00:00+00:00","lugar":"Estadio","aforo_total":500,"precio":30,"categoria":"musica"}'
)


def attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def prop(kind: str, name: str, value: str) -> str:
    return f'<{kind}Prop name="{name}">{escape(value)}</{kind}Prop>'


def node(element: str, children: list[str] | None = None) -> str:
    """An element and its hashTree of children, the shape JMX nests everything in."""
    return element + "<hashTree>" + "".join(children or []) + "</hashTree>"


def headers(name: str, pairs: dict[str, str]) -> str:
    items = "".join(
        '<elementProp name="" elementType="Header">'
        + prop("string", "Header.name", k)
        + prop("string", "Header.value", v)
        + "</elementProp>"
        for k, v in pairs.items()
    )
    return node(
        f'<HeaderManager guiclass="HeaderPanel" testclass="HeaderManager" testname="{name}" enabled="true">'
        f'<collectionProp name="HeaderManager.headers">{items}</collectionProp></HeaderManager>'
    )


def assertion(name: str, field: str, pattern: str, test_type: int = 1) -> str:
    """test_type 1 = the whole field matches the regex, 2 = it contains a match."""
    return node(
        f'<ResponseAssertion guiclass="AssertionGui" testclass="ResponseAssertion" testname="{attr(name)}" '
        'enabled="true"><collectionProp name="Asserion.test_strings">'
        + prop("string", "0", pattern)
        + "</collectionProp>"
        + prop("string", "Assertion.test_field", field)
        + prop("bool", "Assertion.assume_success", "false")
        + prop("int", "Assertion.test_type", str(test_type))
        + "</ResponseAssertion>"
    )


def status(codes: str) -> str:
    return assertion(f"status {codes}", "Assertion.response_code", codes)


def body_has(pattern: str) -> str:
    return assertion(f"body has {pattern}", "Assertion.response_data", pattern, 2)


def extract(var: str, field: str) -> str:
    return node(
        f'<RegexExtractor guiclass="RegexExtractorGui" testclass="RegexExtractor" testname="{var}" enabled="true">'
        + prop("string", "RegexExtractor.useHeaders", "false")
        + prop("string", "RegexExtractor.refname", var)
        + prop("string", "RegexExtractor.regex", f'"{field}"\\s*:\\s*"([^"]+)"')
        + prop("string", "RegexExtractor.template", "$1$")
        + prop("string", "RegexExtractor.default", f"NO_{var.upper()}")
        + prop("string", "RegexExtractor.match_number", "1")
        + "</RegexExtractor>"
    )


def http(name: str, method: str, path: str, body: str | None = None, children: list[str] | None = None) -> str:
    args = ""
    if body is not None:
        args = (
            '<elementProp name="" elementType="HTTPArgument">'
            + prop("bool", "HTTPArgument.always_encode", "false")
            + prop("string", "Argument.value", body)
            + prop("string", "Argument.metadata", "=")
            + "</elementProp>"
        )
    element = (
        f'<HTTPSamplerProxy guiclass="HttpTestSampleGui" testclass="HTTPSamplerProxy" testname="{attr(name)}" '
        'enabled="true">'
        + prop("bool", "HTTPSampler.postBodyRaw", "true" if body is not None else "false")
        + '<elementProp name="HTTPsampler.Arguments" elementType="Arguments">'
        + f'<collectionProp name="Arguments.arguments">{args}</collectionProp></elementProp>'
        + prop("string", "HTTPSampler.path", path)
        + prop("string", "HTTPSampler.method", method)
        + prop("string", "HTTPSampler.contentEncoding", "UTF-8")
        + prop("bool", "HTTPSampler.follow_redirects", "false")
        + prop("bool", "HTTPSampler.use_keepalive", "true")
        + prop("string", "HTTPSampler.implementation", "HttpClient4")
        + "</HTTPSamplerProxy>"
    )
    return node(element, children)


def thread_group(name: str, threads: str, loops: str, children: list[str], duration: str = "", ramp: str = "1") -> str:
    scheduler = "true" if duration else "false"
    element = (
        f'<ThreadGroup guiclass="ThreadGroupGui" testclass="ThreadGroup" testname="{attr(name)}" enabled="true">'
        + prop("string", "ThreadGroup.on_sample_error", "continue")
        + '<elementProp name="ThreadGroup.main_controller" elementType="LoopController" guiclass="LoopControlPanel" '
        'testclass="LoopController" testname="Loop Controller" enabled="true">'
        + prop("bool", "LoopController.continue_forever", "false")
        + prop("string", "LoopController.loops", loops)
        + "</elementProp>"
        + prop("string", "ThreadGroup.num_threads", threads)
        + prop("string", "ThreadGroup.ramp_time", ramp)
        + prop("bool", "ThreadGroup.scheduler", scheduler)
        + prop("string", "ThreadGroup.duration", duration)
        + prop("string", "ThreadGroup.delay", "")
        + "</ThreadGroup>"
    )
    return node(element, children)


def once(children: list[str]) -> str:
    return node(
        '<OnceOnlyController guiclass="OnceOnlyControllerGui" testclass="OnceOnlyController" '
        'testname="once per thread" enabled="true"/>',
        children,
    )


def random_one(children: list[str]) -> str:
    return node(
        '<RandomController guiclass="RandomControlGui" testclass="RandomController" testname="one of" '
        'enabled="true">' + prop("int", "InterleaveControl.style", "1") + "</RandomController>",
        children,
    )


def sync_timer(group: str) -> str:
    return node(
        '<SyncTimer guiclass="TestBeanGUI" testclass="SyncTimer" testname="all at once" enabled="true">'
        f'<stringProp name="groupSize">{group}</stringProp></SyncTimer>'
    )


def throughput_timer(per_minute: str) -> str:
    return node(
        '<ConstantThroughputTimer guiclass="TestBeanGUI" testclass="ConstantThroughputTimer" '
        'testname="offered rate" enabled="true"><intProp name="calcMode">2</intProp>'
        f'<stringProp name="throughput">{per_minute}</stringProp></ConstantThroughputTimer>'
    )


def sign_up_and_in() -> list[str]:
    """A new comprador registers and signs in; the token stays in the thread's ${token}."""
    return [
        http("POST /api/usuarios", "POST", "/api/usuarios", REGISTRO, [status("201"), body_has('"id"')]),
        http(
            "POST /api/auth/token",
            "POST",
            "/api/auth/token",
            LOGIN,
            [status("200"), body_has('"access_token"'), extract("token", "access_token")],
        ),
    ]


def reserve(name: str, evento: str, outcomes: str = "201", estado: str = '"estado"\\s*:\\s*"confirmada"') -> str:
    body = f'{{"evento_id":"{evento}","cantidad":1,"pago":{CARD}}}'
    return http(
        name,
        "POST",
        "/api/reservar",
        body,
        [
            headers("signed in, idempotent", {"Authorization": "Bearer ${token}", "Idempotency-Key": "${__UUID()}"}),
            status(outcomes),
            body_has(estado),
        ],
    )


def plan() -> str:
    defaults = node(
        '<ConfigTestElement guiclass="HttpDefaultsGui" testclass="ConfigTestElement" testname="defaults" '
        'enabled="true"><elementProp name="HTTPsampler.Arguments" elementType="Arguments">'
        '<collectionProp name="Arguments.arguments"/></elementProp>'
        + prop("string", "HTTPSampler.domain", "${__P(host,127.0.0.1)}")
        + prop("string", "HTTPSampler.port", "${__P(port,8080)}")
        + prop("string", "HTTPSampler.protocol", "http")
        + prop("string", "HTTPSampler.connect_timeout", "5000")
        + prop("string", "HTTPSampler.response_timeout", "60000")
        + "</ConfigTestElement>"
    )
    json = headers("json", {"Content-Type": "application/json"})
    organizer = headers("organizer", {"Authorization": "Bearer ${__P(org_token,)}"})
    view = http(
        "GET /api/eventos/{id}",
        "GET",
        "/api/eventos/${__P(evento_grande,)}",
        None,
        [status("200"), body_has('"entradas_disponibles"')],
    )
    listing = http("GET /api/eventos", "GET", "/api/eventos?limit=20", None, [status("200"), body_has("\\[")])
    groups = [
        thread_group("1 create users", "${__P(users_threads,50)}", "1", sign_up_and_in()),
        thread_group(
            "2 create events",
            "${__P(events_threads,20)}",
            "1",
            [
                http(
                    "POST /api/eventos",
                    "POST",
                    "/api/eventos",
                    EVENTO,
                    [organizer, status("201"), body_has('"id"')],
                )
            ],
        ),
        thread_group("3 read events", "${__P(read_threads,100)}", "${__P(read_loops,10)}", [view, listing]),
        thread_group(
            "4 reservations (saga)",
            "${__P(saga_threads,30)}",
            "1",
            [*sign_up_and_in(), reserve("POST /api/reservar (saga)", "${__P(evento_grande,)}")],
        ),
        thread_group(
            "5 flash sale",
            "${__P(flash_buyers,300)}",
            "1",
            [
                *sign_up_and_in(),
                node(
                    '<GenericController guiclass="LogicControllerGui" testclass="GenericController" '
                    'testname="together" enabled="true"/>',
                    [
                        reserve(
                            "POST /api/reservar (flash sale)",
                            "${__P(evento_flash,)}",
                            "201|409",
                            '"(estado|title|type)"',
                        ),
                        sync_timer("${__P(flash_buyers,300)}"),
                    ],
                ),
            ],
            ramp="${__P(flash_ramp,60)}",  # sign-ups spread out (argon2), then every buyer reserves at once
        ),
        thread_group(
            "6 steady mixed",
            "${__P(mixed_threads,40)}",
            "-1",
            [
                once(sign_up_and_in()),
                random_one(
                    [
                        listing,
                        listing,
                        view,
                        view,
                        view,
                        view,
                        reserve("POST /api/reservar (mixed)", "${__P(evento_grande,)}"),
                    ]
                ),
                throughput_timer("${__P(mixed_per_minute,12000)}"),
            ],
            duration="${__P(mixed_seconds,60)}",
        ),
    ]
    test_plan = (
        '<TestPlan guiclass="TestPlanGui" testclass="TestPlan" testname="EventFlow" enabled="true">'
        + prop("bool", "TestPlan.functional_mode", "false")
        + prop("bool", "TestPlan.serialize_threadgroups", "true")
        + '<elementProp name="TestPlan.user_defined_variables" elementType="Arguments">'
        '<collectionProp name="Arguments.arguments"/></elementProp>'
        + prop("string", "TestPlan.user_define_classpath", "")
        + "</TestPlan>"
    )
    body = node(test_plan, [defaults, json, *groups])
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<jmeterTestPlan version="1.2" properties="2.8" jmeter="2.13">'
        f"<hashTree>{body}</hashTree></jmeterTestPlan>\n"
    )


if __name__ == "__main__":
    PLAN.write_text(plan())
    print(f"wrote {PLAN}")
