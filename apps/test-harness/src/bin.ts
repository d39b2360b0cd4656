#!/usr/bin/env node
console.log('ocipull-harness: not yet');
