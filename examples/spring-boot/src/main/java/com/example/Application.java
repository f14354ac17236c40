package com.example;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

/**
 * spring-boot-example: the Spring Boot-style example application of twelve, using only the
 * JDK. Listens on SERVER_PORT (default 8080).
 */
public final class Application {
    private Application() {}

    private static void send(HttpExchange ex, int status, String type, String body)
            throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }

    public static void main(String[] args) throws IOException {
        String portEnv = System.getenv("SERVER_PORT");
        int port = portEnv == null || portEnv.isEmpty() ? 8080 : Integer.parseInt(portEnv);
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 128);
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.createContext("/", ex -> {
            String path = ex.getRequestURI().getPath();
            switch (path) {
                case "/": {
                    String greeting = System.getenv().getOrDefault("APP_GREETING", "hello");
                    send(ex, 200, "text/plain; charset=utf-8",
                            greeting + " from spring-boot-example\n");
                    break;
                }
                case "/env":
                    send(ex, 200, "application/json", Json.object(System.getenv()));
                    break;
                case "/health":
                    send(ex, 200, "text/plain; charset=utf-8", "ok\n");
                    break;
                default:
                    send(ex, 404, "text/plain; charset=utf-8", "Not Found\n");
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
        server.start();
        System.out.println("spring-boot-example listening on port " + port);
    }
}
