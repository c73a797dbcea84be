// A stand-in for Google Charts' loader (www.gstatic.com/charts/loader.js), for the
// browser test only. torch-tb-profiler's page awaits google.charts.load() before it asks
// the server for any view; offline that script never arrives and every view spins
// forever. This stub resolves the load and gives every chart class an object that
// accepts any call and draws nothing: charts stay blank, everything else renders, which
// is what the test asserts. It is not shipped to users.
(function () {
  "use strict";
  function Inert() {
    return new Proxy(this, {
      get(target, prop) {
        if (prop in target) return target[prop];
        if (prop === "getSelection") return () => [];
        return () => undefined;
      },
    });
  }
  const visualization = {
    arrayToDataTable: () => new Inert(),
    events: { addListener: () => undefined, removeListener: () => undefined },
  };
  for (const name of ["DataTable", "ColumnChart", "ComboChart", "LineChart", "PieChart",
                      "SteppedAreaChart", "Table", "Timeline"]) {
    visualization[name] = Inert;
  }
  window.google = {
    charts: {
      load: () => Promise.resolve(),
      setOnLoadCallback: (callback) => { Promise.resolve().then(callback); },
    },
    visualization,
  };
})();
