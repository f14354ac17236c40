// expressjs-example: the ExpressJS example application of twelve.
const express = require("express");

const app = express();
const port = parseInt(process.env.PORT || "8080", 10);

app.get("/", (req, res) => {
  const greeting = process.env.APP_GREETING ?? "hello";
  res.type("text/plain").send(`${greeting} from expressjs-example\n`);
});

// The whole process environment, so tests can see what the app sees.
app.get("/env", (req, res) => {
  res.json(process.env);
});

app.get("/health", (req, res) => {
  res.type("text/plain").send("ok\n");
});

const server = app.listen(port, () => {
  console.log(`expressjs-example listening on port ${port}`);
});

process.on("SIGTERM", () => server.close(() => process.exit(0)));
