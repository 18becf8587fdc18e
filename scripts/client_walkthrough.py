"""The README's first walk-through, done with a client generated from /api/openapi.json.

Run by scripts/client-walkthrough, which starts the server, generates the `nexus_client`
package with openapi-python-client and puts it on the path. Every response is parsed by the
generated models (typed, not raw JSON), so a document that disagrees with the API fails here.
Prints one line per step and a closing `N passed, N failed`.
"""

import sys
import time

from nexus_client import AuthenticatedClient
from nexus_client.api.activity import list_activity
from nexus_client.api.agents import create_agent, my_heartbeat_runs
from nexus_client.api.companies import create_company, list_companies
from nexus_client.api.heartbeat_runs import claim, finish
from nexus_client.api.issues import create_issue, get_issue, update_issue
from nexus_client.api.projects import create_project
from nexus_client.api.routines import create_routine, get_routine, upcoming
from nexus_client.api.runs import get_run, list_runs, run_routine
from nexus_client.api.triggers import create_trigger
from nexus_client.models import (
    CreateAgent,
    CreateCompany,
    CreateIssue,
    CreateProject,
    CreateRoutine,
    CreateTriggerType0,
    FinishBody,
    RunRequest,
    RunRequestPayload,
    UpdateIssue,
)

passed = 0
failed = 0


def step(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def main(base_url, board_token):
    board = AuthenticatedClient(base_url=base_url, token=board_token, raise_on_unexpected_status=True)

    company = create_company.sync(client=board, body=CreateCompany(name="Acme"))
    step("a company", company.name == "Acme", company)
    step("listed", any(c.id == company.id for c in list_companies.sync(client=board).companies))

    created = create_agent.sync(company.id, client=board, body=CreateAgent(name="Ada"))
    agent, agent_key = created.agent, created.api_key
    step("an agent and its key", agent.name == "Ada" and agent_key.startswith("nxa_"), created)
    as_agent = AuthenticatedClient(base_url=base_url, token=agent_key, raise_on_unexpected_status=True)

    project = create_project.sync(company.id, client=board, body=CreateProject(name="Operations"))
    step("a project", project.name == "Operations", project)

    issue = create_issue.sync(
        company.id,
        client=board,
        body=CreateIssue(title="Rotate the logs", project_id=project.id, assignee_agent_id=agent.id),
    )
    step("an issue assigned to the agent", issue.status == "todo", issue)

    queued = my_heartbeat_runs.sync(client=as_agent, status="queued").heartbeat_runs
    step("the agent has a queued heartbeat run", len(queued) == 1, queued)
    run = claim.sync(queued[0].id, client=as_agent)
    step("claimed", run.status == "running", run)
    run = finish.sync(queued[0].id, client=as_agent, body=FinishBody(status="succeeded", summary="rotated"))
    step("finished", run.status == "succeeded", run)
    issue = update_issue.sync(issue.id, client=as_agent, body=UpdateIssue(status="done"))
    step("the issue is done", issue.status == "done", issue)

    routine = create_routine.sync(
        company.id,
        client=board,
        body=CreateRoutine(title="Daily report {{date}}", assignee_agent_id=agent.id, project_id=project.id),
    )
    step("a routine", routine.status == "active", routine)
    trigger = create_trigger.sync(
        routine.id,
        client=board,
        body=CreateTriggerType0(kind="schedule", cron_expression="0 9 * * MON-FRI", timezone="Europe/Amsterdam"),
    )
    step("a weekday schedule", trigger.trigger.next_run_at is not None and trigger.secret_material is None, trigger)
    fires = upcoming.sync(routine.id, client=board, count=3).fires
    step("its next fires", len(fires) == 3 and fires[0].at < fires[1].at, fires)

    accepted = run_routine.sync(routine.id, client=board, body=RunRequest(payload=RunRequestPayload.from_dict({"reason": "demo"})))
    step("a run by hand, accepted", accepted.status == "received", accepted)
    dispatched = accepted
    for _ in range(100):
        dispatched = get_run.sync(accepted.id, client=board)
        if dispatched.status != "received":
            break
        time.sleep(0.1)
    step(
        "dispatched: an issue and a heartbeat run",
        dispatched.status == "issue_created" and dispatched.linked_issue_id and dispatched.heartbeat_run_id,
        dispatched,
    )
    runs = list_runs.sync(routine.id, client=board).runs
    step("the routine's runs", [r.id for r in runs] == [accepted.id], runs)
    routine = get_routine.sync(routine.id, client=board)
    step("the routine with its trigger", len(routine.triggers) == 1, routine)

    history = get_issue.sync(issue.id, client=board)
    step("the issue's history", [e.type_ for e in history.events] == ["created", "status_changed"], history.events)
    activity = list_activity.sync(company.id, client=board, limit=5).activity
    step("the audit log", len(activity) == 5, activity)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as error:  # any failure to call or to parse counts as a failed step
        step("the walk-through ran to its end", False, repr(error))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
