package com.example;

/** Logs "<kind> alive" to stdout every few seconds, until stopped. */
final class Heartbeat {
    private Heartbeat() {}

    static void run(String kind) throws InterruptedException {
        String intervalEnv = System.getenv("HEARTBEAT_INTERVAL");
        long millis = 3000;
        if (intervalEnv != null && !intervalEnv.isEmpty()) {
            millis = (long) (Double.parseDouble(intervalEnv) * 1000);
        }
        String greeting = System.getenv().getOrDefault("APP_GREETING", "<unset>");
        long pid = ProcessHandle.current().pid();
        for (long beat = 1; ; beat++) {
            System.out.println(kind + " alive beat=" + beat + " pid=" + pid + " greeting=" + greeting);
            System.out.flush();
            Thread.sleep(millis);
        }
    }
}
