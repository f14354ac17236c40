package com.example;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import org.apache.commons.lang3.StringUtils;

/**
 * A web app built by Maven from Debian's repository: / answers a greeting through
 * commons-lang3 (so it fails to start if the shaded jar lacks it), /health answers 200.
 */
public final class Application {
    private Application() {}

    public static void main(String[] args) throws IOException {
        String portEnv = System.getenv("SERVER_PORT");
        int port = StringUtils.isBlank(portEnv) ? 8080 : Integer.parseInt(portEnv.trim());
        String greeting = StringUtils.defaultIfBlank(System.getenv("APP_GREETING"), "hello");
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/", exchange -> {
            String path = exchange.getRequestURI().getPath();
            int status = 200;
            String body;
            if ("/".equals(path)) {
                body = StringUtils.capitalize(greeting) + " from a jar built by Maven, "
                        + StringUtils.upperCase("offline") + "\n";
            } else if ("/health".equals(path)) {
                body = "ok\n";
            } else {
                status = 404;
                body = "Not Found\n";
            }
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
            exchange.sendResponseHeaders(status, bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        });
        server.start();
        System.out.println("listening on port " + port);
    }
}
