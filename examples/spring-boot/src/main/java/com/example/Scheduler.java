package com.example;

/** The scheduler service of spring-boot-example. */
public final class Scheduler {
    private Scheduler() {}

    public static void main(String[] args) throws InterruptedException {
        Heartbeat.run("scheduler");
    }
}
