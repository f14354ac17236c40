#!/usr/bin/env bash
# Build target/{{name}}.jar with the JDK alone (javac + jar).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf target/classes
mkdir -p target/classes
javac --release 17 -d target/classes $(find src/main/java -name '*.java')
jar --create --file "target/{{name}}.jar" --main-class com.example.Application -C target/classes .
echo "built target/{{name}}.jar"
