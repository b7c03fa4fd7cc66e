#!/usr/bin/env python3
"""Builds klutch-health.json, the Grafana dashboard of a fleet of Klutch control planes, with Grafana's
foundation SDK (grafana-foundation-sdk, pinned in requirements.txt beside this file).

    python3 -m pip install -r deploy/monitoring/grafana/requirements.txt
    python3 deploy/monitoring/grafana/generate.py            # writes klutch-health.json beside this file
    python3 deploy/monitoring/grafana/generate.py --check    # exit 1 when the committed JSON is out of date

Every panel is one entry of PANELS: a row starts a section, a panel names its kind, title, queries and how
its values read. Queries use the series of deploy/monitoring (the `control_plane:` records of
prometheusrule.yaml and klutch-health's own metrics) and the `$control_plane` variable. tests/full/service_level.rs
checks that the committed JSON is this script's output, and runs every query against a real Prometheus that
scraped two simulated control planes.
"""

import argparse
import dataclasses
import pathlib
import sys

from grafana_foundation_sdk.builders import (
    bargauge,
    common as common_builders,
    dashboard as dash,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard as model, prometheus as prometheus_model

OUTPUT = pathlib.Path(__file__).with_name("klutch-health.json")
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query's selector of the chosen control planes.
CP = 'control_plane=~"$control_plane"'


@dataclasses.dataclass
class Query:
    expr: str
    legend: str = "{{control_plane}}"
    # Instant (the latest value, for stat, bar gauge and table panels) or a range over the dashboard's time.
    instant: bool = False


@dataclasses.dataclass
class Panel:
    kind: str  # stat | bargauge | timeseries | statetimeline | table
    title: str
    description: str
    queries: list
    unit: str = ""
    width: int = 8
    height: int = 6
    mappings: dict = None  # value -> (text, colour)
    thresholds: list = None  # [(from value or None, colour)]
    min: float = None
    max: float = None
    stacked: bool = False


@dataclasses.dataclass
class Row:
    title: str


def mapping(*entries):
    return {value: (text, colour) for value, text, colour in entries}


READY = mapping((0, "not ready", "red"), (1, "ready", "green"), (2, "maintenance", "blue"))
RELOAD = mapping((0, "refused", "red"), (1, "loaded", "green"))
UP = mapping((0, "failing", "red"), (1, "passing", "green"))

# 1 ready, 0 not ready or not scraped, 2 in a [maintenance] window (where the availability record is empty).
VERDICT = (
    f"max by (control_plane) (2 * (klutch_health_maintenance{{{CP}}} == 1))"
    f" or max by (control_plane) (control_plane:klutch_health_available:max{{{CP}}})"
)

PANELS = [
    Row("Fleet"),
    Panel(
        "stat",
        "Verdict",
        "Whether any klutch-health replica of each control plane passes /readyz now (not ready also when none "
        "is scraped).",
        [Query(VERDICT, instant=True)],
        mappings=READY,
        width=4,
    ),
    Panel(
        "stat",
        "Root causes",
        "How many root causes each control plane has now: items failing or unknown that nothing else explains, "
        "and clusters whose silent API server explains their items (klutch_health_root_cause). "
        "KlutchHealthItemDown fires for each; klutch-health's status page leads with them.",
        [
            Query(
                "sum by (control_plane) (max by (control_plane, check, item) "
                f"(klutch_health_root_cause{{{CP}}}))",
                instant=True,
            )
        ],
        width=5,
        thresholds=[(None, "green"), (1, "red")],
    ),
    Panel(
        "stat",
        "Availability, 30 days",
        "The share of the last 30 days at least one replica passed /readyz; maintenance windows count neither way.",
        [Query(f"1 - control_plane:klutch_health_unavailable:ratio30d{{{CP}}}", instant=True)],
        unit="percentunit",
        width=5,
    ),
    Panel(
        "bargauge",
        "Error budget left, 30 days",
        "The part of the SLO's 30-day error budget not spent yet (klutch_health:slo_objective:ratio).",
        [Query(f"control_plane:klutch_health_error_budget_remaining:ratio30d{{{CP}}}", instant=True)],
        unit="percentunit",
        width=5,
        thresholds=[(None, "red"), (0.25, "orange"), (0.5, "green")],
        min=0,
        max=1,
    ),
    Panel(
        "stat",
        "Availability, this time range",
        "The share of the dashboard's time range at least one replica passed /readyz.",
        [Query(f"avg_over_time(control_plane:klutch_health_available:max{{{CP}}}[$__range])", instant=True)],
        unit="percentunit",
        width=5,
    ),
    Panel(
        "statetimeline",
        "Verdict over time",
        "Each control plane's verdict through the time range: when it was ready, not ready, in maintenance.",
        [Query(VERDICT)],
        mappings=READY,
        width=12,
    ),
    Panel(
        "timeseries",
        "Error budget burn rate, 1 hour",
        "How many times faster than the SLO allows the budget burned over the last hour: the page needs 14.4 "
        "(with the last 5 minutes), or 6 over 6 hours (with the last 30 minutes).",
        [
            Query(
                f"control_plane:klutch_health_unavailable:ratio1h{{{CP}}}"
                " / on () group_left () (1 - klutch_health:slo_objective:ratio)"
            )
        ],
        width=12,
        thresholds=[(None, "green"), (6, "orange"), (14.4, "red")],
        min=0,
    ),
    Row("Control plane"),
    Panel(
        "timeseries",
        "Items by status",
        "How many items each control plane observes as pass, warn, fail and unknown (whatever the endpoints' "
        "policies make of them).",
        [
            Query(
                "sum by (control_plane, status) (max by (control_plane, check, item, status) "
                f"(klutch_health_check_status{{{CP}}}))",
                legend="{{control_plane}} {{status}}",
            )
        ],
        width=12,
        stacked=True,
    ),
    Panel(
        "table",
        "Items not passing",
        "Every item observed as warn, fail or unknown now; /readyz/CHECK?verbose on klutch-health says why.",
        [
            Query(
                "max by (control_plane, check, item, status) "
                f'(klutch_health_check_status{{{CP}, status=~"warn|fail|unknown"}}) == 1',
                legend="",
                instant=True,
            )
        ],
        width=12,
    ),
    Panel(
        "timeseries",
        "Replicas passing each endpoint",
        "How many klutch-health replicas pass /readyz and /healthz, against how many are scraped.",
        [
            Query(
                f"sum by (control_plane, endpoint) (klutch_health_endpoint_up{{{CP}}})",
                legend="{{control_plane}} /{{endpoint}}",
            ),
            Query(
                f"count by (control_plane) (klutch_health_build_info{{{CP}}})",
                legend="{{control_plane}} scraped",
            ),
        ],
        width=12,
        min=0,
    ),
    Panel(
        "timeseries",
        "Managed resources by state",
        "provider-anynines' ServiceInstances, ServiceBindings, Backups and Restores of each kind by state (the "
        "managed-resources check): failing ones are what users meet; superseded are older Backups and Restores.",
        [
            Query(
                "max by (control_plane, kind, state) "
                f"(klutch_health_managed_resources{{{CP}}})",
                legend="{{control_plane}} {{kind}} {{state}}",
            )
        ],
        width=12,
        min=0,
    ),
    Panel(
        "timeseries",
        "Silenced items",
        "Items a [[silence]] keeps from failing each endpoint.",
        [
            Query(
                f"max by (control_plane, endpoint) (klutch_health_silenced_items{{{CP}}})",
                legend="{{control_plane}} /{{endpoint}}",
            )
        ],
        width=12,
        min=0,
    ),
    Row("Konnectors"),
    Panel(
        "statetimeline",
        "Konnectors",
        "Each app cluster's konnector through the time range: its ClusterBinding's heartbeats (konnectors), or "
        "the konnector the control plane runs for its AppClusterBinding (app-cluster-bindings).",
        [
            Query(
                "max by (control_plane, check, item) "
                f'(klutch_health_check_up{{{CP}, check=~"konnectors|app-cluster-bindings"}})',
                legend="{{control_plane}} {{check}}/{{item}}",
            )
        ],
        mappings=UP,
        width=16,
    ),
    Panel(
        "stat",
        "Silent konnectors",
        "App clusters whose konnector has stopped heartbeating, or whose control-plane konnector or "
        "AppClusterBinding fails (KlutchKonnectorSilent fires for each).",
        [
            Query(
                "sum by (control_plane) (max by (control_plane, check, item) "
                f'(klutch_health_check_status{{{CP}, check=~"konnectors|app-cluster-bindings", status="fail"}}))',
                instant=True,
            )
        ],
        width=8,
        thresholds=[(None, "green"), (1, "orange")],
    ),
    Row("Detection and reload"),
    Panel(
        "timeseries",
        "Polls of provider-anynines' health server",
        "Polls per second by outcome: anything but success is the provider's health server refusing, timing "
        "out or answering badly.",
        [
            Query(
                "sum by (control_plane, outcome) "
                f"(rate(klutch_health_upstream_requests_total{{{CP}}}[$__rate_interval]))",
                legend="{{control_plane}} {{outcome}}",
            )
        ],
        unit="reqps",
    ),
    Panel(
        "timeseries",
        "Poll duration, 90th percentile",
        "How long one poll of provider-anynines' health server takes.",
        [
            Query(
                "histogram_quantile(0.9, sum by (control_plane, le) "
                f"(rate(klutch_health_upstream_request_duration_seconds_bucket{{{CP}}}[$__rate_interval])))"
            )
        ],
        unit="s",
    ),
    Panel(
        "timeseries",
        "Kubernetes watch restarts",
        "Watch errors that led to a reconnect or relist, per second and check (KlutchHealthWatchFailing).",
        [
            Query(
                "sum by (control_plane, check) "
                f"(rate(klutch_health_watch_restarts_total{{{CP}}}[$__rate_interval]))",
                legend="{{control_plane}} {{check}}",
            )
        ],
        unit="ops",
    ),
    Panel(
        "statetimeline",
        "Configuration reloads",
        "Whether every replica runs the configuration it was last given (refused: it keeps the previous one).",
        [Query(f"min by (control_plane) (klutch_health_config_last_reload_successful{{{CP}}})")],
        mappings=RELOAD,
        width=12,
    ),
    Panel(
        "stat",
        "Check task restarts, this time range",
        "Times a check's task died and was restarted (a bug: report it; its items were unknown meanwhile).",
        [
            Query(
                f"sum by (control_plane) (increase(klutch_health_check_task_panics_total{{{CP}}}[$__range]))",
                instant=True,
            )
        ],
        width=12,
        thresholds=[(None, "green"), (1, "red")],
    ),
    Row("History"),
    Panel(
        "timeseries",
        "Availability per interval",
        "The share of each interval at least one replica passed /readyz.",
        [Query(f"avg_over_time(control_plane:klutch_health_available:max{{{CP}}}[$__interval])")],
        unit="percentunit",
        width=12,
        min=0,
        max=1,
    ),
    Panel(
        "timeseries",
        "Item status changes",
        "How many items changed their observed status per interval (klutch-health's /history has each one).",
        [
            Query(
                "sum by (control_plane) "
                f"(changes(klutch_health_check_last_transition_timestamp_seconds{{{CP}}}[$__interval]))"
            )
        ],
        width=12,
        min=0,
    ),
]

BUILDERS = {
    "stat": stat.Panel,
    "bargauge": bargauge.Panel,
    "timeseries": timeseries.Panel,
    "statetimeline": statetimeline.Panel,
    "table": table.Panel,
}


def target(ref, q):
    b = prometheus.Dataquery().ref_id(ref).expr(q.expr).datasource(DATASOURCE).legend_format(q.legend)
    if q.instant:
        b = b.instant()
        if not q.legend:
            b = b.format(prometheus_model.PromQueryFormat.TABLE)
    else:
        b = b.range()
    return b


def panel(p):
    b = BUILDERS[p.kind]().title(p.title).description(p.description).datasource(DATASOURCE)
    b = b.span(p.width).height(p.height)
    for i, q in enumerate(p.queries):
        b = b.with_target(target(chr(ord("A") + i), q))
    if p.unit:
        b = b.unit(p.unit)
    if p.min is not None:
        b = b.min(p.min)
    if p.max is not None:
        b = b.max(p.max)
    if p.mappings:
        options = {
            str(v): model.ValueMappingResult(text=text, color=colour, index=i)
            for i, (v, (text, colour)) in enumerate(sorted(p.mappings.items()))
        }
        b = b.mappings([model.ValueMap(options=options)])
    steps = p.thresholds or [(None, "green")]
    b = b.thresholds(
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )
    if p.kind in ("stat", "bargauge"):
        b = b.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if p.kind == "stat":
        b = b.color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.NONE)
    if p.kind == "timeseries":
        b = b.legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        if p.stacked:
            b = b.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(30)
        if p.thresholds:
            b = b.thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)
            )
    return b


def variables():
    datasource = dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    control_plane = (
        dash.QueryVariable("control_plane")
        .label("Control plane")
        .datasource(DATASOURCE)
        .query("label_values(klutch_health_build_info, control_plane)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )
    return [datasource, control_plane]


def build():
    board = (
        dash.Dashboard("Klutch control planes")
        .uid("klutch-health")
        .description("klutch-health: readiness, availability SLO and detection health of Klutch control planes")
        .tags(["klutch", "klutch-health", "crossplane"])
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .editable()
    )
    for v in variables():
        board = board.with_variable(v)
    # Stable ids, in order: links to a panel (viewPanel=ID) survive regeneration while the order does.
    for n, entry in enumerate(PANELS, start=1):
        if isinstance(entry, Row):
            board = board.with_row(dash.Row(entry.title).id(n))
        else:
            board = board.with_panel(panel(entry).id(n))
    return board.build()


def render():
    return JSONEncoder(sort_keys=True, indent=2).encode(build()) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing it")
    parser.add_argument("--stdout", action="store_true", help="print the JSON instead of writing it")
    args = parser.parse_args()
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    elif args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            sys.exit(f"{OUTPUT} is not what {__file__} generates: run it without --check and commit the result")
    else:
        OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
