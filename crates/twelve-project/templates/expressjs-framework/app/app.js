// {{name}}: a hello-world ExpressJS application.
const express = require("express");

const app = express();
const port = parseInt(process.env.PORT || "8080", 10);

app.get("/", (req, res) => {
  res.type("text/plain").send("Hello, world!\n");
});

app.listen(port, () => {
  console.log(`listening on port ${port}`);
});
