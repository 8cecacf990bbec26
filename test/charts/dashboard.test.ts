// What the dashboard test (dashboard.apiserver.test.ts) reads out of the dashboard before it
// asks Prometheus: the queries of every panel, Grafana's variables expanded, and the metric
// selectors inside each query, which must each have series for the query to count as data.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import test from "ava";
import { CHART } from "./helm.ts";
import { dashboardQueries, metricName, substitute, vectorSelectors } from "./prometheus.ts";

test("vectorSelectors finds each metric with its matchers, not functions, labels, keywords or numbers", (t) => {
  t.deepEqual(
    vectorSelectors(
      'histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{job=~".+", x!="y{z}"}[10s]))) / on (job) group_left b_total or vector(1e-3)',
    ),
    ['a_seconds_bucket{job=~".+", x!="y{z}"}', "b_total"],
  );
  t.deepEqual(vectorSelectors('count(max by (namespace, run) (c{job=~".+"}) == 0) or vector(0)'), [
    'c{job=~".+"}',
  ]);
  t.is(metricName('a_total{job="x"}'), "a_total");
});

test("substitute expands Grafana's variables and refuses one it has no value for", (t) => {
  t.is(
    // Grafana's braced form, `$` `{job}`, spelled so it does not read as a template literal.
    substitute(`rate(x{job=~"$job"}[$__rate_interval]) and ${"$"}{job}`, {
      job: ".+",
      __rate_interval: "10s",
    }),
    'rate(x{job=~".+"}[10s]) and .+',
  );
  t.throws(() => substitute("x[$__range]", {}), { message: /no value for \$__range/ });
});

test("every query of the shipped dashboard names at least one metric once expanded", async (t) => {
  const dashboard = JSON.parse(await readFile(join(CHART, "dashboards", "sovereign-operator.json"), "utf8"));
  const queries = dashboardQueries(dashboard);
  t.true(queries.length > 20);
  const vars = {
    job: ".+",
    __rate_interval: "10s",
    __interval: "2s",
    __range: "5m",
    datasource: "prometheus",
  };
  for (const q of queries)
    t.true(vectorSelectors(substitute(q.expr, vars)).length > 0, `${q.title} ${q.refId}: ${q.expr}`);
});
