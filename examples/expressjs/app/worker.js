// expressjs-example worker: a long-running process that logs a heartbeat.
const interval = 1000 * parseFloat(process.env.HEARTBEAT_INTERVAL || "3");
const greeting = process.env.APP_GREETING ?? "<unset>";
let beat = 0;

function tick() {
  beat += 1;
  console.log(`worker alive beat=${beat} pid=${process.pid} greeting=${greeting}`);
}

tick();
const timer = setInterval(tick, interval);
process.on("SIGTERM", () => {
  clearInterval(timer);
  process.exit(0);
});
