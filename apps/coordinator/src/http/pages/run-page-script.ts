/** Milliseconds between two refreshes of a live run page. */
export const RUN_PAGE_POLL_MS = 2000;

/**
 * Browser script of the run page, served at /assets/run-page.js. While the run is live it
 * reads GET /api/v1/runs/<id> (with the session cookie) every RUN_PAGE_POLL_MS and updates
 * the state and each stage row with textContent only. When the run finishes it reloads the page
 * once, so that the server renders the errors or the report.
 */
export const RUN_PAGE_SCRIPT = `'use strict';
(function () {
  var root = document.getElementById('run');
  if (!root) return;
  var runId = root.getAttribute('data-run-id');
  var finalStates = ['completed', 'failed', 'cancelled'];
  if (finalStates.indexOf(root.getAttribute('data-state')) !== -1) return;

  function setText(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell) cell.textContent = String(value);
  }

  function update(run) {
    var state = document.getElementById('run-state');
    state.textContent = run.state;
    state.className = 'state state-' + run.state;
    document.getElementById('run-updated').textContent = run.updatedAt;
    run.stages.forEach(function (stage) {
      var row = document.querySelector('tr[data-stage="' + stage.name + '"]');
      if (!row) return;
      row.querySelector('progress').value = stage.progress;
      setText(row, 'percent', Math.round(stage.progress * 100) + ' %');
      ['total', 'waiting', 'active', 'completed', 'failed'].forEach(function (field) { setText(row, field, stage.jobs[field]); });
    });
    if (finalStates.indexOf(run.state) !== -1 || document.querySelectorAll('tr[data-stage]').length !== run.stages.length) {
      window.location.reload();
      return false;
    }
    return true;
  }

  function poll() {
    fetch('/api/v1/runs/' + encodeURIComponent(runId), { headers: { accept: 'application/json' }, credentials: 'same-origin' })
      .then(function (response) {
        if (response.status === 401) { window.location.href = '/login?next=' + encodeURIComponent(window.location.pathname); return; }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.json().then(function (run) { if (update(run)) setTimeout(poll, ${RUN_PAGE_POLL_MS}); });
      })
      .catch(function () { setTimeout(poll, ${RUN_PAGE_POLL_MS} * 5); });
  }
  setTimeout(poll, ${RUN_PAGE_POLL_MS});
})();
`;
