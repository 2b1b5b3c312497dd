// The Cloudflare Workers entry: hands each request, a Fetch API Request, to the edge twin's
// wasi:http incoming-handler (the component as jco transpiled it in build.sh) and returns its Response.
import { handleIncomingRequest, types } from '@bytecodealliance/preview2-shim/http';
import { error, streams } from '@bytecodealliance/preview2-shim/io';
import { instantiate } from '../build/component/tls_site_edge.js';
import { coreModules } from '../build/core-modules.js';

// All the component imports (wasi:http/proxy's types and streams), from the shim's browser
// flavour, which maps them onto Fetch's Request and Response: no Node.js API, no nodejs_compat.
const imports = { 'wasi:http/types': types, 'wasi:io/error': error, 'wasi:io/streams': streams };

// Synchronous: Workers hand us compiled modules, and instantiating one is allowed at any time.
const instantiateComponent = () =>
  instantiate((name) => coreModules[name], imports, (module, moduleImports) => new WebAssembly.Instance(module, moduleImports));

// One instance per isolate, made when the Worker starts: jco's glue takes about 10 ms of CPU to
// instantiate (measured under workerd), as much as the free plan allows a request, so not once a
// request; at start-up it counts against the start-up limit instead. The component keeps no
// state between requests, so sharing an instance changes no response.
let component = instantiateComponent();

export default {
  async fetch(request) {
    try {
      return await handleIncomingRequest(request, component.incomingHandler.handle);
    } catch (failure) {
      // A trap (the component's panic) leaves the instance unusable: start a new one. This
      // request gets what `wasmtime serve` answers to a trap.
      console.error('tls-site-edge:', failure);
      component = instantiateComponent();
      return new Response(null, { status: 500 });
    }
  },
};
