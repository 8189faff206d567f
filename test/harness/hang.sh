#!/usr/bin/env bash
# Harness fixture: a suite that never ends (run-tests stops it at the
# harness's TUNNEL_SSH_SUITE_TIMEOUT, 30 s, long before this sleep ends).
echo "ok 1 - the first check passed"
sleep 600
