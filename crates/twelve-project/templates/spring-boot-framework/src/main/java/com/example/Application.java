package com.example;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

/** {{name}}: a hello-world web application using only the JDK. */
public final class Application {
    private Application() {}

    public static void main(String[] args) throws IOException {
        String portEnv = System.getenv("SERVER_PORT");
        int port = portEnv == null || portEnv.isEmpty() ? 8080 : Integer.parseInt(portEnv);
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/", exchange -> {
            int status = "/".equals(exchange.getRequestURI().getPath()) ? 200 : 404;
            byte[] body = (status == 200 ? "Hello, world!\n" : "Not Found\n")
                    .getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
            exchange.sendResponseHeaders(status, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        System.out.println("listening on port " + port);
    }
}
