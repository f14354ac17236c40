package com.example;

/** The worker service of spring-boot-example. */
public final class Worker {
    private Worker() {}

    public static void main(String[] args) throws InterruptedException {
        Heartbeat.run("worker");
    }
}
