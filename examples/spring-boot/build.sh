#!/usr/bin/env bash
# Build target/spring-boot-example.jar with the JDK alone (javac + jar).
# Main-Class is com.example.Application; the worker and scheduler run with
#   java -cp spring-boot-example.jar com.example.Worker|com.example.Scheduler
set -euo pipefail
cd "$(dirname "$0")"
rm -rf target/classes
mkdir -p target/classes
javac --release 17 -d target/classes $(find src/main/java -name '*.java')
jar --create --file target/spring-boot-example.jar --main-class com.example.Application -C target/classes .
echo "built target/spring-boot-example.jar"
