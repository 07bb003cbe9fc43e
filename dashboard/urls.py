from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import ids  # noqa: F401  (registers <id:...>)
from dashboard.pages import (
    actions,
    clusters,
    escalations,
    history,
    logs,
    merging,
    new_batch,
    results,
    stats,
    templates_pages,
    timeline,
    views,
)
from dashboard.pages import webhooks as webhook_pages

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.batch_list, name="batch-list"),
    path("batches/new/", new_batch.batch_new, name="batch-new"),
    path("batches/new/row/", new_batch.task_row, name="task-row"),
    path("batches/<id:batch_id>/", views.batch_detail, name="batch"),
    path("batches/history/", history.batch_history, name="batch-history"),
    path("batches/<id:batch_id>/timeline/", timeline.batch_timeline, name="batch-timeline"),
    path("batches/<id:batch_id>.json", views.batch_json, name="batch-json"),
    path("batches/<id:batch_id>/compare/", views.compare, name="compare"),
    path("batches/<id:batch_id>/cancel/", actions.batch_cancel, name="batch-cancel"),
    path("batches/<id:batch_id>/retry-failed/", actions.batch_retry_failed, name="batch-retry-failed"),
    path("batches/<id:batch_id>/rerun-sequential/", actions.batch_rerun_sequential, name="batch-rerun"),
    path("batches/<id:batch_id>/result/", results.batch_result, name="batch-result"),
    path("batches/<id:batch_id>/result.md", results.batch_result_markdown, name="batch-result-md"),
    path("batches/<id:batch_id>/result.json", results.batch_result_json, name="batch-result-json"),
    path("batches/<id:batch_id>/reviews/", results.batch_review, name="batch-review"),
    # The merge queue and best of N (dashboard/pages/merging.py).
    path("merge-steps/<id:step_id>/", merging.merge_step_action, name="merge-step"),
    path("merge-steps/<id:step_id>/sides/", merging.merge_step_sides, name="merge-step-sides"),
    path("batches/<id:batch_id>/merge/reset/", merging.merge_reset, name="merge-reset"),
    path("batches/<id:batch_id>/candidates/", merging.candidates, name="merge-candidates"),
    path("batches/<id:batch_id>/candidates/<id:run_id>/pick/", merging.pick_winner, name="merge-pick"),
    path("stats/", stats.stats_page, name="stats"),
    path("stats.json", stats.stats_json, name="stats-json"),
    path("escalations/", escalations.escalation_list, name="escalations"),
    path("escalations/<id:escalation_id>/assign/", escalations.escalation_assign, name="escalation-assign"),
    path("escalations/<id:escalation_id>/resolve/", escalations.escalation_resolve, name="escalation-resolve"),
    path("webhooks/", webhook_pages.webhook_list, name="webhooks"),
    path("webhooks/<id:delivery_id>/redeliver/", webhook_pages.webhook_redeliver, name="webhook-redeliver"),
    path("clusters/", clusters.cluster_list, name="clusters"),
    path("clusters/drain/", clusters.cluster_drain, name="cluster-drain"),
    path("runs/<id:run_id>/", views.run_detail, name="run"),
    path("runs/<id:run_id>/cancel/", actions.run_cancel, name="run-cancel"),
    path("runs/<id:run_id>/retry/", actions.run_retry, name="run-retry"),
    path("runs/<id:run_id>/attempts/<id:number>/log/", views.run_log, name="run-log"),
    path("runs/<id:run_id>/attempts/<id:number>/log/download/", views.run_log_download, name="run-log-download"),
    path("runs/<id:run_id>/attempts/<id:number>/lines/", logs.log_lines, name="run-log-lines"),
    path("runs/<id:run_id>/attempts/<id:number>/search/", logs.log_search, name="run-log-search"),
    path("runs/<id:run_id>/attempts/<id:number>/diff/", views.run_diff, name="run-diff"),
    path("runs/<id:run_id>/attempts/<id:number>/diff/download/", views.run_diff_download, name="run-diff-download"),
    # Saved and scheduled batches (dashboard/pages/templates_pages.py).
    path("templates/", templates_pages.template_list, name="templates"),
    path("templates/<id:template_id>/", templates_pages.template_detail, name="template"),
    path("templates/<id:template_id>/edit/", templates_pages.template_edit, name="template-edit"),
    path("templates/<id:template_id>/schedules/", templates_pages.schedule_create, name="template-schedule"),
    path("schedules/<id:schedule_id>/", templates_pages.schedule_action, name="schedule-action"),
]
