// {{name}}: a hello-world ExpressJS application, serving Prometheus metrics where the
// 12-factor charm scrapes them (METRICS_PATH on METRICS_PORT).
const http = require("http");
const express = require("express");

const app = express();
const port = parseInt(process.env.PORT || "8080", 10);
const metricsPort = parseInt(process.env.METRICS_PORT || String(port), 10);
const metricsPath = process.env.METRICS_PATH || "/metrics";
let requests = 0;

// The app's series in Prometheus' text format.
function metrics(req, res) {
  res.set("Content-Type", "text/plain; version=0.0.4");
  res.send(
    "# HELP app_requests_total HTTP requests served.\n" +
      "# TYPE app_requests_total counter\n" +
      `app_requests_total ${requests}\n`
  );
}

app.use((req, res, next) => {
  requests += 1;
  next();
});

app.get("/", (req, res) => {
  res.type("text/plain").send("Hello, world!\n");
});

if (metricsPort === port) {
  app.get(metricsPath, metrics);
} else {
  // The charm's metrics port (9464 by default with paas-charm main).
  const metricsApp = express();
  metricsApp.get(metricsPath, metrics);
  http.createServer(metricsApp).listen(metricsPort, () => {
    console.log(`metrics on port ${metricsPort}${metricsPath}`);
  });
}

app.listen(port, () => {
  console.log(`listening on port ${port}`);
});
