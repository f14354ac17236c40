package com.example;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.LongAdder;

/**
 * {{name}}: a hello-world web application using only the JDK, with the environment of the
 * spring-boot-framework charm: it listens on SERVER_PORT and serves Prometheus metrics on
 * the management port (management.server.port, or MANAGEMENT_SERVER_PORT) at
 * management.endpoints.web.base-path + path-mapping.prometheus (/actuator/prometheus),
 * with the names Spring Boot's Micrometer uses.
 */
public final class Application {
    private Application() {}

    /** Request count and total seconds by "method status uri". */
    private static final Map<String, LongAdder[]> REQUESTS = new ConcurrentHashMap<>();
    private static final long START = System.nanoTime();

    private static String env(String name) {
        String v = System.getenv(name);
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static int port(String value, int fallback) {
        return value == null ? fallback : Integer.parseInt(value);
    }

    private static String metricsPath() {
        String base = env("management.endpoints.web.base-path");
        String name = env("management.endpoints.web.path-mapping.prometheus");
        base = base == null ? "/actuator" : base.replaceAll("/+$", "");
        return base + "/" + (name == null ? "prometheus" : name);
    }

    public static void main(String[] args) throws IOException {
        int port = port(env("SERVER_PORT"), 8080);
        String management = env("management.server.port");
        int metricsPort = port(management != null ? management : env("MANAGEMENT_SERVER_PORT"), port);
        String metricsPath = metricsPath();

        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.createContext("/", exchange -> {
            String path = exchange.getRequestURI().getPath();
            if (metricsPort == port && metricsPath.equals(path)) {
                send(exchange, 200, metrics(), "text/plain; version=0.0.4; charset=utf-8");
            } else if ("/".equals(path)) {
                timed(exchange, "/", 200, "Hello, world!\n");
            } else {
                timed(exchange, "NOT_FOUND", 404, "Not Found\n");
            }
        });
        server.start();
        if (metricsPort != port) {
            HttpServer mgmt = HttpServer.create(new InetSocketAddress(metricsPort), 0);
            mgmt.createContext("/", exchange -> {
                if (metricsPath.equals(exchange.getRequestURI().getPath())) {
                    send(exchange, 200, metrics(), "text/plain; version=0.0.4; charset=utf-8");
                } else {
                    send(exchange, 404, "Not Found\n", "text/plain; charset=utf-8");
                }
            });
            mgmt.start();
        }
        System.out.println("listening on port " + port + ", metrics on port " + metricsPort + " at " + metricsPath);
    }

    private static void timed(HttpExchange exchange, String uri, int status, String body) throws IOException {
        long t0 = System.nanoTime();
        send(exchange, status, body, "text/plain; charset=utf-8");
        String key = exchange.getRequestMethod() + " " + status + " " + uri;
        LongAdder[] a = REQUESTS.computeIfAbsent(key, k -> new LongAdder[] {new LongAdder(), new LongAdder()});
        a[0].increment();
        a[1].add(System.nanoTime() - t0);
    }

    private static void send(HttpExchange exchange, int status, String body, String type) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", type);
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    private static String metrics() {
        StringBuilder b = new StringBuilder();
        b.append("# HELP http_server_requests_seconds Duration of HTTP server request handling\n");
        b.append("# TYPE http_server_requests_seconds summary\n");
        for (Map.Entry<String, LongAdder[]> e : new TreeMap<>(REQUESTS).entrySet()) {
            String[] k = e.getKey().split(" ", 3);
            String labels = "{method=\"" + k[0] + "\",status=\"" + k[1] + "\",uri=\"" + k[2] + "\"}";
            b.append("http_server_requests_seconds_count").append(labels).append(' ')
                    .append(e.getValue()[0].sum()).append('\n');
            b.append("http_server_requests_seconds_sum").append(labels).append(' ')
                    .append(e.getValue()[1].sum() / 1e9).append('\n');
        }
        MemoryMXBean memory = ManagementFactory.getMemoryMXBean();
        b.append("# HELP jvm_memory_used_bytes The amount of used memory\n");
        b.append("# TYPE jvm_memory_used_bytes gauge\n");
        b.append("jvm_memory_used_bytes{area=\"heap\"} ").append(memory.getHeapMemoryUsage().getUsed()).append('\n');
        b.append("jvm_memory_used_bytes{area=\"nonheap\"} ").append(memory.getNonHeapMemoryUsage().getUsed()).append('\n');
        b.append("# HELP jvm_threads_live_threads The current number of live threads\n");
        b.append("# TYPE jvm_threads_live_threads gauge\n");
        b.append("jvm_threads_live_threads ").append(ManagementFactory.getThreadMXBean().getThreadCount()).append('\n');
        b.append("# HELP process_uptime_seconds The uptime of the Java virtual machine\n");
        b.append("# TYPE process_uptime_seconds gauge\n");
        b.append("process_uptime_seconds ").append((System.nanoTime() - START) / 1e9).append('\n');
        return b.toString();
    }
}
